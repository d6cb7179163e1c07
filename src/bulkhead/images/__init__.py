"""Images: content store, references, registry client, layers, image store and archives."""
