"""Serving with Triton: the model repository writer (``repo``), the server
runtimes (``server``: a tritonserver process or the NGC container), the HTTP API client
(``api``) and the python-backend model (``python_model``)."""
