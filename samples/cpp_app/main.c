/* Runs a bundle once on zero inputs (dynamic dims set to 1) and prints each output's shape: the C API end to end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xrt/xrt.h"

static int fail(xrt_status_t status) {
  fprintf(stderr, "error: %s: %s\n", xrt_status_code_string(xrt_status_code(status)), xrt_status_message(status));
  xrt_status_free(status);
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s model.xrtpkg\n", argv[0]);
    return 2;
  }
  xrt_bundle_t* bundle = NULL;
  xrt_status_t status = xrt_bundle_open_file(argv[1], NULL, &bundle);
  if (status) return fail(status);
  xrt_session_t* session = NULL;
  status = xrt_session_create(bundle, NULL, &session);
  xrt_bundle_release(bundle); /* the session keeps it alive */
  if (status) return fail(status);
  printf("%s\n", xrt_session_describe(session));

  size_t n = xrt_session_input_count(session);
  xrt_tensor_view_t* views = calloc(n, sizeof(*views));
  int64_t(*shapes)[XRT_MAX_RANK] = calloc(n, sizeof(*shapes));
  void** buffers = calloc(n, sizeof(void*));
  for (size_t i = 0; i < n; ++i) {
    xrt_io_info_t info;
    if ((status = xrt_session_input_info(session, i, &info))) return fail(status);
    uint64_t count = 1;
    for (uint32_t d = 0; d < info.rank; ++d) {
      shapes[i][d] = info.shape[d] < 0 ? 1 : info.shape[d];
      count *= (uint64_t)shapes[i][d];
    }
    views[i].dtype = info.dtype;
    views[i].rank = info.rank;
    views[i].shape = shapes[i];
    views[i].byte_size = count * xrt_dtype_size(info.dtype);
    buffers[i] = calloc(1, views[i].byte_size ? views[i].byte_size : 1);
    views[i].data = buffers[i];
  }
  xrt_outputs_t* outputs = NULL;
  if ((status = xrt_session_run(session, NULL, views, n, &outputs))) return fail(status);
  for (size_t i = 0; i < xrt_outputs_count(outputs); ++i) {
    xrt_tensor_view_t out;
    const char* name = NULL;
    if ((status = xrt_outputs_get(outputs, i, &out, &name))) return fail(status);
    printf("output %s: %s [", name, xrt_dtype_name(out.dtype));
    for (uint32_t d = 0; d < out.rank; ++d) printf(d ? ",%lld" : "%lld", (long long)out.shape[d]);
    printf("]\n");
  }
  xrt_outputs_release(outputs);
  xrt_session_release(session);
  for (size_t i = 0; i < n; ++i) free(buffers[i]);
  free(buffers);
  free(shapes);
  free(views);
  return 0;
}
