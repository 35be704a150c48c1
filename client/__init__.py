"""DashFrog."""
