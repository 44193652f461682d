#pragma once

// For the library's hot thread-locals (the current worker and task): in a
// shared library the default model calls __tls_get_addr on every access;
// initial-exec is one %fs-relative load. It takes a few bytes of the static
// TLS block that glibc keeps spare for libraries, so dlopen() still works.
#define QUELL_FAST_TLS [[gnu::tls_model("initial-exec")]]
