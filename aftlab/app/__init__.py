"""App: the Gradio COT ranker (``aftlab app`` or ``python -m aftlab.app``).

- ``ranker``: every decision of the app, without Gradio
- ``ui``: the Gradio layout (``build_app``, ``launch``)
"""
