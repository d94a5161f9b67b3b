"""The security scanner. It reads artifacts as data: it never unpickles, imports or executes
anything from them."""
