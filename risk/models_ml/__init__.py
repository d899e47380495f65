"""Trained models (pure Python + numpy + torch, no Django).

``metrics`` and ``splits`` are shared by every binary classifier the project trains (risk,
imaging, NLP); ``attribution`` explains a differentiable model's output; each model has its
own module (``heart_disease``) with its data loading, preprocessing, training and file format.
"""
