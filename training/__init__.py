"""Training and evaluating the default model's layers (``python -m training``,
``python -m training.evaluate``).

Serving never imports this package: the file format it writes and the classifier it checks
its figures with live in ``serve_app`` (``encoder_layers``, ``classifier``).
"""
