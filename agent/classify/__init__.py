"""The image classification service: preprocessing, postprocessing, the client."""
