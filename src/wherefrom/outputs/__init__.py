"""What wherefrom shows people: the self-contained HTML report and the terminal summary."""

from wherefrom.outputs.report import write_report
from wherefrom.outputs.summary import print_summary

__all__ = ["print_summary", "write_report"]
