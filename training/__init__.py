"""Training pipeline: fits the thermometer regressors and the MNIST classifier, publishes each result as a new model
version (artifacts), lists versions and promotes one to serve (`python -m training --help`)."""
