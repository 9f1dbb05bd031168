"""What both compatible front ends share: the image limit those services document. (Their operations run through
``deps.operation`` with their own authentication, ``via``.)"""

FIVE_MIB = 5 * 1024 * 1024  # both services refuse images above 5 MiB
