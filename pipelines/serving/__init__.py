"""``run.py serve``: exports behind TensorFlow Serving's REST shape, plus a page to try them.

Modules: ``tensors`` (the predict API's JSON, checked against a signature's inputs), ``served``
(one loaded export per name, its signatures and its card), ``live`` (listening sessions: audio in
pieces, detections as they happen), ``app`` (the Flask routes and the server) and ``web/`` (the
page: HTML, JavaScript and CSS, no build step and nothing fetched from elsewhere).
"""
