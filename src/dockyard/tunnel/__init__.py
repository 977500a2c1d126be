"""Pairing client streams (SSH, terminals, exec, files, port forwards) with streams from workspace agents."""
