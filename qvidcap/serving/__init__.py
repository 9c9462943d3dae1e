"""08: the caption pipeline for new videos (`qvidcap caption`) and the Flask `POST /upload` API."""
