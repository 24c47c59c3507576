/* Decode one rectangle of a JPEG with libjpeg-turbo, with the same pixels a whole-frame decode gives there.
 *
 * The training crop of a 426x240 frame covers about 40% of it, and libjpeg-turbo can skip most of the rest:
 * jpeg_crop_scanline() limits the inverse DCT, upsampling and colour conversion to the iMCU columns
 * around the crop, jpeg_skip_scanlines() entropy-decodes the rows above it without the rest of that work,
 * and decoding stops after the crop's last row. No wheel on PyPI exposes this with the library bundled,
 * hence this module, built against the system's libjpeg-turbo (see setup.py; the loader falls back to
 * simplejpeg's whole-frame decoding where it is not built).
 *
 * Exactness: chroma upsampling at the left and right edges of a cropped decode sees no neighbours, so the
 * region decoded is widened by one iMCU on each side and only its inside is copied out; rows need no
 * margin (jpeg_skip_scanlines keeps the upsampler's context). Corrupt-data warnings are errors, as in
 * simplejpeg's strict mode; damage below the crop's last row goes unseen, since that data is never read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

#ifndef LIBJPEG_TURBO_VERSION
#error "libjpeg-turbo is needed (jpeg_crop_scanline, jpeg_skip_scanlines, BGR output)"
#endif

#if JPEG_LIB_VERSION >= 70
#define IMCU_WIDTH(cinfo) ((cinfo)->max_h_samp_factor * (cinfo)->min_DCT_h_scaled_size)
#else
#define IMCU_WIDTH(cinfo) ((cinfo)->max_h_samp_factor * (cinfo)->min_DCT_scaled_size)
#endif

typedef struct {
    struct jpeg_error_mgr base;
    jmp_buf escape;
    char message[JMSG_LENGTH_MAX];
} ErrorManager;

static void raise_error(j_common_ptr cinfo) {
    ErrorManager *err = (ErrorManager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->escape, 1);
}

static void warning_is_error(j_common_ptr cinfo, int level) {
    if (level < 0) /* corrupt data; levels >= 0 are trace messages */
        raise_error(cinfo);
}

/* A decompressor whose errors, corrupt-data warnings included, jump back to err->escape with err->message. */
static void create_decompressor(struct jpeg_decompress_struct *cinfo, ErrorManager *err) {
    cinfo->err = jpeg_std_error(&err->base);
    err->base.error_exit = raise_error;
    err->base.emit_message = warning_is_error;
    err->message[0] = '\0';
    jpeg_create_decompress(cinfo);
}

typedef struct {
    int left, top, width, height, scale_denom, mirror, bgr;
} Region;

/* 0 on success; -1 with err->message set by libjpeg; -2 when the region does not fit the image. */
static int decode_into(struct jpeg_decompress_struct *cinfo, ErrorManager *err, const unsigned char *data,
                       size_t size, const Region *region, unsigned char *out, JDIMENSION *full_width,
                       JDIMENSION *full_height) {
    if (setjmp(err->escape))
        return -1;
    jpeg_mem_src(cinfo, data, (unsigned long)size);
    jpeg_read_header(cinfo, TRUE);
    cinfo->out_color_space = region->bgr ? JCS_EXT_BGR : JCS_RGB;
    cinfo->scale_num = 1;
    cinfo->scale_denom = (unsigned int)region->scale_denom;
    jpeg_calc_output_dimensions(cinfo);
    *full_width = cinfo->output_width;
    *full_height = cinfo->output_height;
    if ((JDIMENSION)region->left + region->width > cinfo->output_width ||
        (JDIMENSION)region->top + region->height > cinfo->output_height)
        return -2;
    jpeg_start_decompress(cinfo);

    JDIMENSION margin = (JDIMENSION)IMCU_WIDTH(cinfo);
    JDIMENSION start = (JDIMENSION)region->left > margin ? (JDIMENSION)region->left - margin : 0;
    JDIMENSION end = (JDIMENSION)region->left + region->width + margin;
    JDIMENSION decoded_width = (end < cinfo->output_width ? end : cinfo->output_width) - start;
    if (decoded_width < cinfo->output_width)
        jpeg_crop_scanline(cinfo, &start, &decoded_width);
    if (region->top > 0)
        jpeg_skip_scanlines(cinfo, (JDIMENSION)region->top);
    /* One row at a time into a scratch row, copied out while it is in the L1 cache. libjpeg-turbo's SIMD
     * colour conversion writes a 32-byte-aligned row with non-temporal stores (past the caches, to memory),
     * which made decoding a crop and copying it 1.9x slower (0.18 against 0.095 ms for a crop of a 426x240
     * frame); so the row starts one byte off alignment, where it is written with plain stores. */
    JSAMPARRAY scratch = (*cinfo->mem->alloc_sarray)((j_common_ptr)cinfo, JPOOL_IMAGE, decoded_width * 3 + 1, 1);
    scratch[0] += 1;
    const unsigned char *inside = scratch[0] + ((JDIMENSION)region->left - start) * 3;
    size_t row_bytes = (size_t)region->width * 3;
    for (int y = 0; y < region->height; y++) {
        jpeg_read_scanlines(cinfo, scratch, 1);
        unsigned char *row = out + (size_t)y * row_bytes;
        if (!region->mirror) {
            memcpy(row, inside, row_bytes);
            continue;
        }
        for (int x = 0, from = region->width - 1; x < region->width; x++, from--)
            memcpy(row + 3 * x, inside + 3 * from, 3);
    }
    return 0;
}

static const char *check_region(const Region *region, const Py_buffer *out) {
    if (region->left < 0 || region->top < 0 || region->width < 1 || region->height < 1)
        return "the region needs left, top >= 0 and width, height >= 1";
    if (region->scale_denom != 1 && region->scale_denom != 2 && region->scale_denom != 4 && region->scale_denom != 8)
        return "scale_denom must be 1, 2, 4 or 8";
    if (!PyBuffer_IsContiguous(out, 'C') || out->len < (Py_ssize_t)region->width * region->height * 3)
        return "out must be a C-contiguous buffer of at least width * height * 3 bytes";
    return NULL;
}

static PyObject *decode_checked(const Py_buffer *data, const Py_buffer *out, const Region *region) {
    struct jpeg_decompress_struct cinfo;
    ErrorManager err;
    create_decompressor(&cinfo, &err);
    JDIMENSION full_width = 0, full_height = 0;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = decode_into(&cinfo, &err, data->buf, (size_t)data->len, region, out->buf, &full_width, &full_height);
    jpeg_destroy_decompress(&cinfo);
    Py_END_ALLOW_THREADS
    if (status == -1)
        return PyErr_Format(PyExc_ValueError, "the JPEG does not decode: %s", err.message);
    if (status == -2)
        return PyErr_Format(PyExc_ValueError, "the %ux%u frame does not hold the %dx%d region at (%d, %d)",
                            full_width, full_height, region->width, region->height, region->left, region->top);
    return Py_BuildValue("(II)", full_width, full_height);
}

static PyObject *decode_region(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"data", "out", "left", "top", "width", "height", "scale_denom", "mirror", "bgr",
                               NULL};
    Py_buffer data, out;
    Region region = {0, 0, 0, 0, 1, 0, 0};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*w*iiii|ipp", keywords, &data, &out, &region.left,
                                     &region.top, &region.width, &region.height, &region.scale_denom,
                                     &region.mirror, &region.bgr))
        return NULL;
    const char *problem = check_region(&region, &out);
    PyObject *result = problem ? PyErr_Format(PyExc_ValueError, "%s", problem) : decode_checked(&data, &out, &region);
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *image_size(PyObject *self, PyObject *arg) {
    Py_buffer data;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    struct jpeg_decompress_struct cinfo;
    ErrorManager err;
    create_decompressor(&cinfo, &err);
    if (setjmp(err.escape)) {
        PyErr_Format(PyExc_ValueError, "the JPEG does not decode: %s", err.message);
    } else {
        jpeg_mem_src(&cinfo, data.buf, (unsigned long)data.len);
        jpeg_read_header(&cinfo, TRUE);
        result = Py_BuildValue("(II)", cinfo.image_width, cinfo.image_height);
    }
    jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"decode_region", (PyCFunction)(void (*)(void))decode_region, METH_VARARGS | METH_KEYWORDS,
     "decode_region(data, out, left, top, width, height, scale_denom=1, mirror=False, bgr=False) -> (W, H)\n\n"
     "Decode the width x height rectangle at (left, top) of the JPEG, scaled by 1/scale_denom, into out\n"
     "(height rows of width RGB pixels, or BGR), mirrored left-right when asked. Returns the scaled image's\n"
     "(width, height). ValueError for a JPEG that does not decode (corrupt-data warnings included), a\n"
     "region outside the image, or an out too small."},
    {"image_size", image_size, METH_O, "image_size(data) -> (width, height) from the JPEG's header."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg_region",
                                    "Region decoding with libjpeg-turbo (see the C source's header).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__jpeg_region(void) { return PyModule_Create(&module); }
