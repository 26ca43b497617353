"""The VGG-19 taps the losses read, by name (Gatys et al. 2016): torch-free, so that the results
schema can name its quality columns without importing the network."""

CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
