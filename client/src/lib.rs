//! edgemq-client: the library devices, operators and cloud consumers use with edgemq.
