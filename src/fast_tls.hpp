#pragma once
// QUELL_FAST_TLS lives with the other build-wide definitions.
#include "quell/detail/config.hpp"
