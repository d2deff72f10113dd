/*
 * A baseline JPEG to 8-bit RGB with the system's libjpeg, as a Node-API
 * addon: `decode(bytes, out, orientation)` fills `out` (width x height x 3
 * bytes, sized by the caller from the header) and returns a Promise of
 * `{ width, height }` as displayed, or of `{ declined, message }` when this
 * decoder leaves the file to sharp.
 *
 * Why: Debian's Pillow (the reference preprocessing) links Debian's
 * libjpeg62-turbo, and so does this addon, with Pillow's settings (islow
 * IDCT, fancy upsampling, RGB out): the pixels are Pillow's bit for bit, and
 * a 1080 px photo decodes in about half of sharp's time, since none of
 * libvips' pipeline is set up around it.
 *
 * It declines, leaving the verdict to the sharp path and its tested error
 * messages, whatever is not the common clean case: progressive, arithmetic
 * or 12-bit files, CMYK/YCCK, a size other than `out` holds, a libjpeg error, and
 * the first libjpeg warning (damage Pillow tolerates or refuses case by case:
 * sharp's path already sorts those out). Progressive files are left alone
 * also because their scan count is unbounded, and only sharp's path has a
 * timeout.
 *
 * The decode runs on libuv's thread pool, so a large photo does not hold up
 * the event loop of the thread that asked. No state is shared between calls
 * or threads (worker threads each load the addon).
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

typedef struct {
  const unsigned char *in;
  size_t in_len;
  unsigned char *out;
  size_t out_len;
  int orientation;
  napi_ref in_ref; /* keep the input and output alive while the pool thread uses them */
  napi_ref out_ref;
  napi_deferred deferred;
  napi_async_work work;
  int declined;
  char message[JMSG_LENGTH_MAX + 64];
  unsigned width, height;
} Job;

/* EXIF orientation 2..8 applied as Pillow's exif_transpose does. */
static void orient(const unsigned char *src, unsigned w, unsigned h, int o, unsigned char *dst, unsigned *ow, unsigned *oh) {
  unsigned W = o >= 5 ? h : w, H = o >= 5 ? w : h;
  *ow = W;
  *oh = H;
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

static void decline(Job *job, const char *why) {
  job->declined = 1;
  snprintf(job->message, sizeof job->message, "%s", why);
}

static void execute(napi_env env, void *data) {
  (void)env;
  Job *job = (Job *)data;
  struct jpeg_decompress_struct cinfo;
  ErrorState err;
  unsigned char *volatile pixels = NULL;
  memset(&err, 0, sizeof err);
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error;
  err.pub.emit_message = on_message;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    free(pixels);
    decline(job, err.message);
    return;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, job->in, (unsigned long)job->in_len);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.progressive_mode || cinfo.arith_code || cinfo.data_precision != 8) {
    jpeg_destroy_decompress(&cinfo);
    return decline(job, "not a baseline 8-bit JPEG");
  }
  if (!(cinfo.num_components == 3 || cinfo.num_components == 1)) {
    jpeg_destroy_decompress(&cinfo);
    return decline(job, "not an RGB or grey JPEG");
  }
  if ((size_t)cinfo.image_width * cinfo.image_height * 3 != job->out_len) {
    jpeg_destroy_decompress(&cinfo);
    return decline(job, "the output buffer does not fit the frame");
  }
  /* Pillow's JpegDecode.c for mode "RGB" (grey is replicated, as convert("RGB") does). */
  cinfo.out_color_space = JCS_RGB;
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  jpeg_start_decompress(&cinfo);
  unsigned w = cinfo.output_width, h = cinfo.output_height;
  size_t stride = (size_t)w * 3;
  int turn = job->orientation >= 2 && job->orientation <= 8;
  /* Oriented photos decode into scratch memory first, then turn into out. */
  if (turn) {
    pixels = malloc(job->out_len);
    if (!pixels) {
      jpeg_destroy_decompress(&cinfo);
      return decline(job, "out of memory");
    }
  }
  unsigned char *target = turn ? pixels : job->out;
  while (cinfo.output_scanline < h) {
    JSAMPROW rows[16];
    unsigned n = h - cinfo.output_scanline < 16 ? h - cinfo.output_scanline : 16;
    for (unsigned i = 0; i < n; i++) rows[i] = target + stride * (cinfo.output_scanline + i);
    jpeg_read_scanlines(&cinfo, rows, n);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  job->width = w;
  job->height = h;
  if (turn) {
    orient(pixels, w, h, job->orientation, job->out, &job->width, &job->height);
    free(pixels);
  }
}

static void complete(napi_env env, napi_status status, void *data) {
  Job *job = (Job *)data;
  napi_value result, value;
  napi_create_object(env, &result);
  if (status == napi_ok && !job->declined) {
    napi_create_uint32(env, job->width, &value);
    napi_set_named_property(env, result, "width", value);
    napi_create_uint32(env, job->height, &value);
    napi_set_named_property(env, result, "height", value);
  } else {
    napi_get_boolean(env, true, &value);
    napi_set_named_property(env, result, "declined", value);
    napi_create_string_utf8(env, status == napi_ok ? job->message : "cancelled", NAPI_AUTO_LENGTH, &value);
    napi_set_named_property(env, result, "message", value);
  }
  napi_resolve_deferred(env, job->deferred, result);
  napi_delete_reference(env, job->in_ref);
  napi_delete_reference(env, job->out_ref);
  napi_delete_async_work(env, job->work);
  free(job);
}

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

static napi_value decode(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    return throw_type(env, "decode(bytes, out, orientation)");
  }
  size_t in_len = 0, out_len = 0;
  unsigned char *in = bytes_of(env, argv[0], &in_len);
  unsigned char *out = bytes_of(env, argv[1], &out_len);
  if (!in || !out) return throw_type(env, "bytes and out must be Uint8Arrays");
  int32_t orientation = 1;
  if (napi_get_value_int32(env, argv[2], &orientation) != napi_ok) return throw_type(env, "orientation must be a number");
  Job *job = calloc(1, sizeof(Job));
  if (!job) return throw_type(env, "out of memory");
  job->in = in;
  job->in_len = in_len;
  job->out = out;
  job->out_len = out_len;
  job->orientation = orientation;
  napi_value promise, name;
  napi_create_reference(env, argv[0], 1, &job->in_ref);
  napi_create_reference(env, argv[1], 1, &job->out_ref);
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_string_utf8(env, "nosepaw:jpeg-decode", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, execute, complete, job, &job->work);
  napi_queue_async_work(env, job->work);
  return promise;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "decode", NAPI_AUTO_LENGTH, decode, NULL, &fn);
  napi_set_named_property(env, exports, "decode", fn);
  return exports;
}
