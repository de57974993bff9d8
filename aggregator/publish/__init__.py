"""Publishing: the digest feed (RSS, Atom, JSON Feed) and the web page, rendered from the
store and served over HTTP by a small server of our own."""
