"""Training pipeline: fits the thermometer regressors and the MNIST classifier and exports them to models/."""
