"""Input pipelines: ILSVRC2015 VID/DET readers, the synthetic generator and tf.data pipelines.

Importing the package registers the TFDS datasets `imagenet_vid` and `imagenet_det_vid30`
(`input_pipeline.builders`); that import is light (tensorflow_datasets loads TensorFlow lazily).
Modules: `classes` (the 30 VID classes), `ilsvrc` (plain reader of the official layout),
`builders` (TFDS builders), `synthetic` (ILSVRC-format generator), `augment` (SSD-style clip
augmentation), `pipeline` (tf.data pipelines: training clips, still images), `train_data` (the
trainer's entry: `prepare` the datasets, `create_batches` of a phase, the batch contract),
`preprocess` (THE test-time transform of a frame: evaluation, demo, export).
"""

from input_pipeline import builders  # noqa: F401  (registers the TFDS datasets)
