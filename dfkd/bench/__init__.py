"""`dfkd bench`: a matrix of data-free runs, run as separate processes, and its report.

``matrix`` turns a bench file or the command line into checked cells, ``runner`` runs them
(resumably) and records each as ``cell.json``, ``report`` and ``plots`` turn the cell
directories into the tables and PNGs. Nothing here imports torch.
"""
