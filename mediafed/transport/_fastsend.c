/* The last step of forwarding one RTP packet to one subscriber, in one call.
 *
 * mediafed's forwarding logic is Python (media/track.py, DownTrack.forward).
 * Its last step is mechanical: copy the plaintext packet into a scratch
 * buffer, write the subscriber's payload type, sequence number, timestamp and
 * SSRC, protect it with the subscriber's SRTP session (libsrtp, as loaded by
 * pylibsrtp) and send it. Done in Python, that is five calls and two objects
 * per packet per subscriber; here it is one call.
 *
 * Optional: when this module is not built, DownTrack.forward does the same in
 * Python (the reference, tested against this one).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define SCRATCH_SIZE 2048
/* libsrtp writes at most this many bytes of trailer (auth tag, MKI). */
#define MAX_TRAILER 148

typedef int (*srtp_protect_fn)(void *ctx, void *rtp_hdr, int *len);

static srtp_protect_fn protect = NULL;
static unsigned char scratch[SCRATCH_SIZE];

static PyObject *
set_protect(PyObject *module, PyObject *address)
{
    void *fn = PyLong_AsVoidPtr(address);
    if (fn == NULL && PyErr_Occurred())
        return NULL;
    protect = (srtp_protect_fn)fn;
    Py_RETURN_NONE;
}

/* send_rtp(fd, packet, length, b1, seq, ts, ssrc, srtp_ctx, sockaddr) -> int
 *
 * packet: bytes-like plaintext RTP (at least 12 bytes); b1: the second header
 * byte to write (marker | payload type); srtp_ctx: the srtp_t address;
 * sockaddr: the destination as a packed struct sockaddr_in / sockaddr_in6.
 * Returns the protected length sent, -1 when libsrtp refused the packet, or
 * -2 when the kernel did (EAGAIN, ENOBUFS, unreachable...).
 */
static PyObject *
send_rtp(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "send_rtp takes 9 arguments");
        return NULL;
    }
    if (protect == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_protect was not called");
        return NULL;
    }
    int fd = (int)PyLong_AsLong(args[0]);
    Py_ssize_t length = PyLong_AsSsize_t(args[2]);
    long b1 = PyLong_AsLong(args[3]);
    unsigned long seq = PyLong_AsUnsignedLongMask(args[4]);
    unsigned long ts = PyLong_AsUnsignedLongMask(args[5]);
    unsigned long ssrc = PyLong_AsUnsignedLongMask(args[6]);
    void *ctx = PyLong_AsVoidPtr(args[7]);
    if (PyErr_Occurred())
        return NULL;
    Py_buffer packet, addr;
    if (PyObject_GetBuffer(args[1], &packet, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[8], &addr, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&packet);
        return NULL;
    }
    long result = -1;
    if (length < 12 || length > packet.len || length > SCRATCH_SIZE - MAX_TRAILER ||
        addr.len < (Py_ssize_t)sizeof(struct sockaddr_in) ||
        addr.len > (Py_ssize_t)sizeof(struct sockaddr_in6)) {
        PyBuffer_Release(&packet);
        PyBuffer_Release(&addr);
        PyErr_SetString(PyExc_ValueError, "send_rtp: bad packet length or address");
        return NULL;
    }
    memcpy(scratch, packet.buf, (size_t)length);
    scratch[1] = (unsigned char)b1;
    scratch[2] = (unsigned char)(seq >> 8);
    scratch[3] = (unsigned char)seq;
    scratch[4] = (unsigned char)(ts >> 24);
    scratch[5] = (unsigned char)(ts >> 16);
    scratch[6] = (unsigned char)(ts >> 8);
    scratch[7] = (unsigned char)ts;
    scratch[8] = (unsigned char)(ssrc >> 24);
    scratch[9] = (unsigned char)(ssrc >> 16);
    scratch[10] = (unsigned char)(ssrc >> 8);
    scratch[11] = (unsigned char)ssrc;
    int len = (int)length;
    if (protect(ctx, scratch, &len) == 0) {
        ssize_t sent = sendto(fd, scratch, (size_t)len, 0, (const struct sockaddr *)addr.buf,
                              (socklen_t)addr.len);
        result = sent < 0 ? -2 : len;
    }
    PyBuffer_Release(&packet);
    PyBuffer_Release(&addr);
    return PyLong_FromLong(result);
}

static PyMethodDef methods[] = {
    {"set_protect", set_protect, METH_O, "Give the address of libsrtp's srtp_protect."},
    {"send_rtp", (PyCFunction)(void (*)(void))send_rtp, METH_FASTCALL,
     "Rewrite, protect and send one RTP packet; the protected length, -1 or -2."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mediafed.transport._fastsend", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__fastsend(void)
{
    return PyModule_Create(&module);
}
