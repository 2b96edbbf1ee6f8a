"""Data: discover, audit, split, decode once, augment, feed (tf.data)."""
