"""The MONAI Label app folder (``main.py``); pass this folder, or the one ``monai-iqad label start`` writes, as
``--app``."""
