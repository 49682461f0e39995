"""One module per notebook: the measurements each notebook shows, on a :class:`~perflab.studies.lab.Lab`."""
