"""What a job will cost before it runs: memory per stage, time from a measured sample, and disk for its outputs."""
