"""Where results go besides the device's own socket."""
