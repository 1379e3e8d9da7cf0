"""Data: dataset families and their rows (sources.py), what a train stage's streams are built from
(training.py), tokenisation (formats.py, chat.py), batch streams, and instruction-tuning preparation (prepare/)."""
