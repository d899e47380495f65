"""CNN findings on images: architectures, training, batched inference, Grad-CAM heat maps and the
read path of the imaging job (``pipeline``).

Pure computation (numpy, torch, Pillow); only ``train.load_dataset``/``train.register_trained`` and
``inference.get_loaded_model`` touch Django, through the model registry (``cdss.model_registry``),
importing it when called, so the rest runs where Django is not installed (``bench/imaging.py``,
``bench/imaging_gpu_search.py``).
"""
