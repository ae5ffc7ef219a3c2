"""The host's status server (program `status`): server.py serves /status, /status.json,
/metrics and /health; host_figures.py samples, report.py builds the typed report, page.py
renders it (page.html); build_info.py, incidents.py and queue_stats.py feed it."""
