#pragma once

// Everything quell offers, in one include.

#include "quell/cancellation.hpp"
#include "quell/error.hpp"
