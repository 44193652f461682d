#include <quell/quell.hpp>

int main() {
  quell::CancellationSource source;
  int calls = 0;
  quell::CancellationCallback callback(source.token(), [&] { ++calls; });
  source.request_cancel();
  return calls == 1 && source.token().cancelled() ? 0 : 1;
}
