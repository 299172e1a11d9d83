"""A small RansomEye-like web app and worker for the demo host (run by supervisord)."""
