"""showcase: the public website (templates and a little vanilla JS) and published replays. It reads the
other apps and is imported by none of them."""
