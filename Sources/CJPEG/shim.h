// libjpeg(-turbo) from Debian's libjpeg-dev. jpeglib.h needs stdio.h first.
#include <stdio.h>
#include <jpeglib.h>
