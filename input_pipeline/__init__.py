"""Input pipelines: ILSVRC2015 VID/DET readers, the synthetic generator and tf.data pipelines."""
