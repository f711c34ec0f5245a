"""The public website: leaderboards, submission reports and the methods page, rendered as static
files from what the aggregator publishes (only published entries; never items or references)."""
