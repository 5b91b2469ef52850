"""What the routes do that is not HTTP: no request, no response, no status code here.

datasets.py  the dataset catalogue: built-in datasets on this machine plus users' uploads
compare.py   runs side by side: the settings that differ, and labels made of them
"""
