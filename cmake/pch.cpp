// Carrier for the shared precompiled header (<torch/torch.h>); every frugal target reuses it.
