/*
 * Baseline JPEGs to 8-bit RGB with the system's libjpeg, as a Node-API addon.
 *
 *   decode(bytes, out, orientation, shrink) -> Promise<{ width, height } | { declined, message }>
 *     the whole image into `out` (width x height x 3 bytes, sized by the
 *     caller from the header), EXIF orientation 1-8 applied;
 *   open(bytes, shrink) -> { handle, width, height } | { declined, message }
 *   read(handle, out, rows) -> Promise<{ rows } | { declined, message }>
 *   close(handle)
 *     the same decode in strips of rows, so that the caller can resample one
 *     strip while the next is decoded (the decodes run on libuv's thread pool).
 *
 * `shrink` (1, 2, 4 or 8) scales the inverse DCT as Pillow's `draft` does:
 * ceil(width / shrink) x ceil(height / shrink) pixels, most of the transform
 * and of the full-size image skipped.
 *
 * Why: Debian's Pillow (the reference preprocessing) links Debian's
 * libjpeg62-turbo, and so does this addon, with Pillow's settings (islow
 * IDCT, fancy upsampling, RGB out): the pixels are Pillow's bit for bit, and
 * a 1080 px photo decodes in about half of sharp's time, since none of
 * libvips' pipeline is set up around it.
 *
 * It declines, leaving the verdict to the sharp path and its tested error
 * messages, whatever is not the common clean case: progressive, arithmetic
 * or 12-bit files, CMYK/YCCK, a size other than `out` holds, a libjpeg error,
 * and the first libjpeg warning (damage Pillow tolerates or refuses case by
 * case: sharp's path already sorts those out). Progressive files are left
 * alone also because their scan count is unbounded, and only sharp's path
 * has a timeout.
 *
 * No state is shared between decoders or threads (worker threads each load
 * the addon); one decoder is used by one call at a time.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

typedef struct {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
} ErrorState;

static void on_error(j_common_ptr cinfo) {
  ErrorState *e = (ErrorState *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, e->message);
  longjmp(e->jump, 1);
}

/* Level -1 is a corrupt-data warning; higher levels are trace output. */
static void on_message(j_common_ptr cinfo, int level) {
  if (level < 0) on_error(cinfo);
}

/* One JPEG being decoded: libjpeg's state and its own copy of the file. */
typedef struct {
  struct jpeg_decompress_struct cinfo;
  ErrorState err;
  unsigned char *bytes;
  int live;          /* cinfo created and not yet destroyed */
  int busy;          /* a read is on the thread pool */
  int close_pending; /* close() came during that read */
  char message[JMSG_LENGTH_MAX + 64];
} Decoder;

static void decoder_close(Decoder *d) {
  if (d->live) jpeg_destroy_decompress(&d->cinfo);
  d->live = 0;
  free(d->bytes);
  d->bytes = NULL;
}

static int decoder_fail(Decoder *d, const char *why) {
  snprintf(d->message, sizeof d->message, "%s", why);
  decoder_close(d);
  return 0;
}

/* Reads the header and starts decompression; 0 (closed, with a message) when it declines. */
static int decoder_open(Decoder *d, const unsigned char *bytes, size_t length, unsigned shrink) {
  memset(d, 0, sizeof *d);
  d->bytes = malloc(length ? length : 1);
  if (!d->bytes) return decoder_fail(d, "out of memory");
  memcpy(d->bytes, bytes, length);
  d->cinfo.err = jpeg_std_error(&d->err.pub);
  d->err.pub.error_exit = on_error;
  d->err.pub.emit_message = on_message;
  if (setjmp(d->err.jump)) return decoder_fail(d, d->err.message);
  jpeg_create_decompress(&d->cinfo);
  d->live = 1;
  jpeg_mem_src(&d->cinfo, d->bytes, (unsigned long)length);
  jpeg_read_header(&d->cinfo, TRUE);
  if (d->cinfo.progressive_mode || d->cinfo.arith_code || d->cinfo.data_precision != 8) {
    return decoder_fail(d, "not a baseline 8-bit JPEG");
  }
  if (!(d->cinfo.num_components == 3 || d->cinfo.num_components == 1)) return decoder_fail(d, "not an RGB or grey JPEG");
  /* Pillow's JpegDecode.c for mode "RGB" (grey is replicated, as convert("RGB") does). */
  d->cinfo.out_color_space = JCS_RGB;
  d->cinfo.dct_method = JDCT_ISLOW;
  d->cinfo.do_fancy_upsampling = TRUE;
  d->cinfo.scale_num = 1;
  d->cinfo.scale_denom = shrink;
  jpeg_start_decompress(&d->cinfo);
  return 1;
}

/*
 * Up to `rows` more rows into `out` (3 * width bytes a row); after the last
 * row, the rest of the file is read to its end (libjpeg warns there about a
 * truncated or damaged tail). Returns the rows read, or -1 (closed, with a
 * message) when it declines.
 */
static long decoder_read(Decoder *d, unsigned char *out, unsigned rows) {
  if (!d->live) return -1;
  size_t stride = (size_t)d->cinfo.output_width * 3;
  volatile unsigned done = 0;
  if (setjmp(d->err.jump)) {
    decoder_fail(d, d->err.message);
    return -1;
  }
  while (done < rows && d->cinfo.output_scanline < d->cinfo.output_height) {
    JSAMPROW strip[16];
    unsigned n = rows - done;
    unsigned left = d->cinfo.output_height - d->cinfo.output_scanline;
    if (n > left) n = left;
    if (n > 16) n = 16;
    for (unsigned i = 0; i < n; i++) strip[i] = out + stride * (done + i);
    done += jpeg_read_scanlines(&d->cinfo, strip, n);
  }
  if (d->cinfo.output_scanline == d->cinfo.output_height) {
    jpeg_finish_decompress(&d->cinfo);
    decoder_close(d);
  }
  return (long)done;
}

/* EXIF orientation 2..8 applied as Pillow's exif_transpose does. */
static void orient(const unsigned char *src, unsigned w, unsigned h, int o, unsigned char *dst) {
  unsigned W = o >= 5 ? h : w, H = o >= 5 ? w : h;
  for (unsigned y = 0; y < H; y++) {
    unsigned char *d = dst + (size_t)y * W * 3;
    for (unsigned x = 0; x < W; x++, d += 3) {
      unsigned sx, sy;
      switch (o) {
        case 2: sx = w - 1 - x; sy = y; break;
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;
        case 4: sx = x; sy = h - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = h - 1 - x; break;
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;
        default: sx = w - 1 - y; sy = x; break; /* 8 */
      }
      const unsigned char *s = src + ((size_t)sy * w + sx) * 3;
      d[0] = s[0];
      d[1] = s[1];
      d[2] = s[2];
    }
  }
}

/* --- JavaScript glue ------------------------------------------------------ */

static napi_value throw_type(napi_env env, const char *message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

/* A Uint8Array argument's bytes, or NULL. */
static unsigned char *bytes_of(napi_env env, napi_value v, size_t *length) {
  bool is_typed = false;
  napi_typedarray_type type;
  void *data = NULL;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed) return NULL;
  if (napi_get_typedarray_info(env, v, &type, length, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) return NULL;
  return data;
}

/* A shrink argument (1, 2, 4 or 8), or 0. */
static unsigned shrink_of(napi_env env, napi_value v) {
  uint32_t shrink = 0;
  if (napi_get_value_uint32(env, v, &shrink) != napi_ok) return 0;
  return shrink == 1 || shrink == 2 || shrink == 4 || shrink == 8 ? shrink : 0;
}

static napi_value declined(napi_env env, const char *message) {
  napi_value result, value;
  napi_create_object(env, &result);
  napi_get_boolean(env, true, &value);
  napi_set_named_property(env, result, "declined", value);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &value);
  napi_set_named_property(env, result, "message", value);
  return result;
}

static void set_uint(napi_env env, napi_value obj, const char *name, unsigned v) {
  napi_value value;
  napi_create_uint32(env, v, &value);
  napi_set_named_property(env, obj, name, value);
}

/* A promise settled by `complete` after `execute` ran on the thread pool. */
typedef struct {
  napi_deferred deferred;
  napi_async_work work;
  napi_ref refs[2]; /* what the pool thread reads or writes stays alive */
} Async;

static napi_value queue(napi_env env, Async *a, napi_value keep0, napi_value keep1, napi_async_execute_callback execute,
                        napi_async_complete_callback complete) {
  napi_value promise, name;
  napi_create_reference(env, keep0, 1, &a->refs[0]);
  napi_create_reference(env, keep1, 1, &a->refs[1]);
  napi_create_promise(env, &a->deferred, &promise);
  napi_create_string_utf8(env, "nosepaw:jpeg-decode", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, a, &a->work);
  napi_queue_async_work(env, a->work);
  return promise;
}

static void settle(napi_env env, Async *a, napi_value result) {
  napi_resolve_deferred(env, a->deferred, result);
  napi_delete_reference(env, a->refs[0]);
  napi_delete_reference(env, a->refs[1]);
  napi_delete_async_work(env, a->work);
}

/* decode(bytes, out, orientation) */

typedef struct {
  Async async;
  Decoder decoder;
  const unsigned char *in;
  size_t in_len;
  unsigned char *out;
  size_t out_len;
  int orientation;
  unsigned shrink;
  int ok;
  unsigned width, height;
} WholeJob;

static void whole_execute(napi_env env, void *data) {
  (void)env;
  WholeJob *job = (WholeJob *)data;
  Decoder *d = &job->decoder;
  if (!decoder_open(d, job->in, job->in_len, job->shrink)) return;
  unsigned w = d->cinfo.output_width, h = d->cinfo.output_height;
  if ((size_t)w * h * 3 != job->out_len) {
    decoder_fail(d, "the output buffer does not fit the frame");
    return;
  }
  int turn = job->orientation >= 2 && job->orientation <= 8;
  /* Oriented photos decode into scratch memory first, then turn into out. */
  unsigned char *target = turn ? malloc(job->out_len) : job->out;
  if (!target) {
    decoder_fail(d, "out of memory");
    return;
  }
  if (decoder_read(d, target, h) == (long)h) {
    job->ok = 1;
    job->width = turn && job->orientation >= 5 ? h : w;
    job->height = turn && job->orientation >= 5 ? w : h;
    if (turn) orient(target, w, h, job->orientation, job->out);
  }
  if (turn) free(target);
  decoder_close(d);
}

static void whole_complete(napi_env env, napi_status status, void *data) {
  WholeJob *job = (WholeJob *)data;
  napi_value result;
  if (status == napi_ok && job->ok) {
    napi_create_object(env, &result);
    set_uint(env, result, "width", job->width);
    set_uint(env, result, "height", job->height);
  } else {
    result = declined(env, status == napi_ok ? job->decoder.message : "cancelled");
  }
  settle(env, &job->async, result);
  free(job);
}

static napi_value decode(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4) {
    return throw_type(env, "decode(bytes, out, orientation, shrink)");
  }
  size_t in_len = 0, out_len = 0;
  unsigned char *in = bytes_of(env, argv[0], &in_len);
  unsigned char *out = bytes_of(env, argv[1], &out_len);
  if (!in || !out) return throw_type(env, "bytes and out must be Uint8Arrays");
  int32_t orientation = 1;
  if (napi_get_value_int32(env, argv[2], &orientation) != napi_ok) return throw_type(env, "orientation must be a number");
  unsigned shrink = shrink_of(env, argv[3]);
  if (!shrink) return throw_type(env, "shrink must be 1, 2, 4 or 8");
  WholeJob *job = calloc(1, sizeof(WholeJob));
  if (!job) return throw_type(env, "out of memory");
  job->in = in;
  job->in_len = in_len;
  job->out = out;
  job->out_len = out_len;
  job->orientation = orientation;
  job->shrink = shrink;
  return queue(env, &job->async, argv[0], argv[1], whole_execute, whole_complete);
}

/* open(bytes), read(handle, out, rows), close(handle) */

static void finalize_decoder(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Decoder *d = (Decoder *)data;
  decoder_close(d);
  free(d);
}

static Decoder *decoder_of(napi_env env, napi_value v) {
  napi_valuetype type;
  void *data = NULL;
  if (napi_typeof(env, v, &type) != napi_ok || type != napi_external) return NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok) return NULL;
  return (Decoder *)data;
}

static napi_value open_decoder(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  size_t length = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return throw_type(env, "open(bytes, shrink)");
  unsigned char *bytes = bytes_of(env, argv[0], &length);
  if (!bytes) return throw_type(env, "bytes must be a Uint8Array");
  unsigned shrink = shrink_of(env, argv[1]);
  if (!shrink) return throw_type(env, "shrink must be 1, 2, 4 or 8");
  Decoder *d = malloc(sizeof(Decoder));
  if (!d) return throw_type(env, "out of memory");
  if (!decoder_open(d, bytes, length, shrink)) {
    napi_value result = declined(env, d->message);
    free(d);
    return result;
  }
  napi_value result, handle;
  napi_create_external(env, d, finalize_decoder, NULL, &handle);
  napi_create_object(env, &result);
  napi_set_named_property(env, result, "handle", handle);
  set_uint(env, result, "width", d->cinfo.output_width);
  set_uint(env, result, "height", d->cinfo.output_height);
  return result;
}

typedef struct {
  Async async;
  Decoder *decoder;
  unsigned char *out;
  unsigned rows;
  long done;
} ReadJob;

static void read_execute(napi_env env, void *data) {
  (void)env;
  ReadJob *job = (ReadJob *)data;
  job->done = decoder_read(job->decoder, job->out, job->rows);
}

static void read_complete(napi_env env, napi_status status, void *data) {
  ReadJob *job = (ReadJob *)data;
  Decoder *d = job->decoder;
  napi_value result;
  d->busy = 0;
  if (d->close_pending) decoder_close(d);
  if (status == napi_ok && job->done >= 0) {
    napi_create_object(env, &result);
    set_uint(env, result, "rows", (unsigned)job->done);
  } else {
    result = declined(env, status == napi_ok ? d->message : "cancelled");
  }
  settle(env, &job->async, result);
  free(job);
}

static napi_value read_rows(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    return throw_type(env, "read(handle, out, rows)");
  }
  Decoder *d = decoder_of(env, argv[0]);
  size_t out_len = 0;
  unsigned char *out = bytes_of(env, argv[1], &out_len);
  uint32_t rows = 0;
  if (!d || !out || napi_get_value_uint32(env, argv[2], &rows) != napi_ok) {
    return throw_type(env, "read(handle, out: Uint8Array, rows: number)");
  }
  if (d->busy) return throw_type(env, "a read of this decoder is still running");
  if (!d->live) return throw_type(env, "the decoder is closed");
  if ((size_t)rows * d->cinfo.output_width * 3 > out_len) return throw_type(env, "out is shorter than the rows asked for");
  ReadJob *job = calloc(1, sizeof(ReadJob));
  if (!job) return throw_type(env, "out of memory");
  job->decoder = d;
  job->out = out;
  job->rows = rows;
  d->busy = 1;
  return queue(env, &job->async, argv[0], argv[1], read_execute, read_complete);
}

static napi_value close_decoder(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return throw_type(env, "close(handle)");
  Decoder *d = decoder_of(env, argv[0]);
  if (!d) return throw_type(env, "close(handle)");
  if (d->busy) d->close_pending = 1;
  else decoder_close(d);
  return NULL;
}

NAPI_MODULE_INIT() {
  const struct {
    const char *name;
    napi_callback fn;
  } functions[] = {{"decode", decode}, {"open", open_decoder}, {"read", read_rows}, {"close", close_decoder}};
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++) {
    napi_value fn;
    napi_create_function(env, functions[i].name, NAPI_AUTO_LENGTH, functions[i].fn, NULL, &fn);
    napi_set_named_property(env, exports, functions[i].name, fn);
  }
  return exports;
}
