"""What the routes do that is not HTTP: no request, no response, no status code here.

datasets.py  the dataset catalogue: built-in datasets on this machine plus users' uploads
compare.py   runs side by side: the settings that differ, and labels made of them
queue.py     why a queued job waits: its reason in words, and when it should start
series_cache.py  the curves of finished runs kept for GET /compare/series (LRU by bytes)
settled_series.py  where GET /compare/series finds each curve: LRU, stored summaries, or computed
forks.py     whether a checkpoint can start a forked run (same family, same shapes)
importance.py  sweeps' parameter importances, kept per API process
"""
