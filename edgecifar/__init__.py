"""edgecifar: train, export and benchmark CIFAR-10 classifiers for edge devices.

Importing this package (or ``edgecifar.runtime``) never imports TensorFlow: a device needs only
numpy and the TFLite runtime. Training, export and the model registry import TensorFlow lazily.
"""

__version__ = "0.1.0"

#: Class names in CIFAR-10's label order; every model's output follows it.
LABELS: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

#: How many classes every model scores (one home: derived from LABELS).
NUM_CLASSES: int = len(LABELS)

#: The input contract of every model: raw RGB pixels 0-255 as float, NHWC.
INPUT_SHAPE: tuple[int, int, int] = (32, 32, 3)
