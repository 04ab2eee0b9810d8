"""The bottom layer: rules every other part of the package shares, each written once.

Modules here import nothing else of `kaleido_s2v` (a test enforces it): reference images
(`images`), case files (`cases`), video files (`video_io`), atomic writes (`atomic`), content digests
(`hashing`), paths read from files (`paths`) and config files (`config_files`).
"""
