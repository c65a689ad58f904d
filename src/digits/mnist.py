"""What an MNIST-style digit is, for every module: a leaf with no dependencies, so that the
data layer, picture preparation, the ONNX-only install and the service share these facts
without importing one another."""

FIELD = 28  # pixels a side: every model reads 28×28 grey images, white ink on black
DIGIT_CLASSES = tuple("0123456789")  # the classes of a dataset of handwritten digits, by name
