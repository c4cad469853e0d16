"""Backends: lower the IR to torch modules (torch) or Graphviz figures (draw)."""
