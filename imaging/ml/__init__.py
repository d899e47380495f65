"""CNN findings on images: architectures, training, batched inference and Grad-CAM heat maps.

Pure computation (numpy and torch); only ``train.train_and_register`` and
``inference.get_loaded_model`` touch Django, through the model registry (``cdss.model_registry``).
"""
