"""What wherefrom shows people: the self-contained HTML report (`report.write_report`) and the terminal summary
(`summary.print_summary`). Import them from their modules: a command that only prints does not load the report's
plotting stack."""
