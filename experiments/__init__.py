"""The user's front door: the `evgrid` CLI, shipped scenarios, paper comparisons and plots."""
