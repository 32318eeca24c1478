"""RQ jobs (take ids, call services) and the daily scheduled jobs."""
