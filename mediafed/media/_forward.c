/* The room core's native steps: what the forwarding path does to a packet in
 * steady state, on the same state as the Python code (media/layer.py,
 * media/downtrack.py, media/peer.py), which decides everything else.
 *
 * - PeerBase: the base of MediaPeer. Its ``on_rtp`` is the EndpointHandler
 *   method the transport's read loop calls: a packet of a stream the peer
 *   knows by SSRC goes to its layer (extension scan, transport-cc record,
 *   audio level, mute); any other to the Python ``_on_other_rtp``;
 * - InStream / receive_rtp: the base of Layer and Layer.receive: RFC 3550
 *   receive statistics, the retransmission cache, keyframe detection when
 *   subscribers wait (a Python call), then the fan-out;
 * - Forwarder / fanout: the base of DownTrack and the loop over a layer's
 *   DownTracks. One in steady state (synced, not waiting for a keyframe, not
 *   between two layers) gets the packet built here - header rewritten,
 *   extension ids remapped, the VP8 picture id, TL0PICIDX and KEYIDX
 *   continued - and handed to its SendTarget through the transport's C API
 *   (transport/transport_api.h), which numbers, protects and sends it. Any
 *   other runs its Python forward();
 * - remap_and_scan: the header-extension pass, for the Python code.
 *
 * Python may run in the middle of a packet (a callback, a DownTrack's
 * forward()) and change any object: nothing read before such a call is used
 * after it without being read, checked and held again.
 *
 * Optional: without this module, or with MEDIAFED_PURE_PYTHON=1, the Python
 * reference runs (media/native.py); the tests hold the two to the same bytes
 * out and the same state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>
#include <string.h>

#include "../transport/transport_api.h"

static MediafedTransportAPI *transport = NULL;
static unsigned char *scratch = NULL; /* transport->buffer_size bytes */

/* wire/rtp.py remap_extension_ids, byte for byte: one-byte extension ids (and
 * two-byte ids below 16) rewritten in place through ``table`` (16 entries);
 * nothing past ``length`` is read or written. */
static void
remap_ids(unsigned char *buf, Py_ssize_t length, const unsigned char *table)
{
    if (!(buf[0] & 0x10))
        return;
    Py_ssize_t start = 12 + 4 * (buf[0] & 0x0F);
    if (start + 4 > length)
        return;
    unsigned int profile = ((unsigned int)buf[start] << 8) | buf[start + 1];
    Py_ssize_t pos = start + 4;
    Py_ssize_t end = pos + 4 * (((Py_ssize_t)buf[start + 2] << 8) | buf[start + 3]);
    if (end > length)
        end = length;
    if (profile == 0xBEDE) {
        while (pos < end) {
            unsigned char byte = buf[pos];
            if (byte == 0) {
                pos += 1;
                continue;
            }
            int ext_id = byte >> 4;
            if (ext_id == 15)
                return;
            buf[pos] = (unsigned char)((table[ext_id] << 4) | (byte & 0x0F));
            pos += 2 + (byte & 0x0F);
        }
    } else if ((profile & 0xFFF0) == 0x1000) {
        while (pos + 1 < end) {
            unsigned char ext_id = buf[pos];
            if (ext_id == 0) {
                pos += 1;
                continue;
            }
            if (ext_id < 16)
                buf[pos] = table[ext_id];
            pos += 2 + buf[pos + 1];
        }
    }
}

/* remap_and_scan's pass; ``map`` has 16 entries. */
static void
scan_extensions(unsigned char *buf, Py_ssize_t length, const unsigned char *map, long twcc_id,
                long level_id, long *twcc, long *level)
{
    unsigned char first = buf[0];
    Py_ssize_t start = 12 + 4 * (first & 0x0F);
    if (!(first & 0x10) || start + 4 > length || buf[start] != 0xBE || buf[start + 1] != 0xDE)
        return;
    Py_ssize_t pos = start + 4;
    Py_ssize_t end = pos + 4 * (((Py_ssize_t)buf[start + 2] << 8) | buf[start + 3]);
    if (end > length)
        return;
    while (pos < end) {
        unsigned char byte = buf[pos];
        if (byte == 0) {
            pos += 1;
            continue;
        }
        int ext_id = byte >> 4;
        if (ext_id == 15)
            break;
        Py_ssize_t size = (byte & 0x0F) + 1;
        if (pos + 1 + size > end)
            break;
        if (ext_id == twcc_id && size == 2)
            *twcc = ((long)buf[pos + 1] << 8) | buf[pos + 2];
        else if (ext_id == level_id)
            *level = buf[pos + 1] & 0x7F;
        buf[pos] = (unsigned char)((map[ext_id] << 4) | (byte & 0x0F));
        pos += 1 + size;
    }
}

/* -- VP8 picture ids (RFC 7741 section 4.2) -----------------------------------
 *
 * Simulcast layers number their pictures independently: a subscriber moved
 * from one to another would see picture ids jump, and libwebrtc drops frames
 * whose id looks older than one it decoded (a frozen picture until the next
 * keyframe it asks for). Each DownTrack adds offsets so its output continues
 * one sequence of picture ids, TL0PICIDX and KEYIDX, as LiveKit's and
 * Jitsi's bridges do. */

typedef struct {
    int parsed;
    Py_ssize_t pid_at; /* -1: none */
    int pid_bits;      /* 7 or 15 */
    unsigned int pid;
    Py_ssize_t tl0_at;
    unsigned int tl0;
    Py_ssize_t key_at;
    unsigned int keyidx;
} Vp8Info;

/* Where the payload starts and ends (RFC 3550 section 5.1: CSRCs, extension,
 * padding); -1 when the header does not fit. */
static int
payload_bounds(const unsigned char *p, Py_ssize_t length, Py_ssize_t *start, Py_ssize_t *end)
{
    Py_ssize_t pos = 12 + 4 * (p[0] & 0x0F);
    if (p[0] & 0x10) {
        if (pos + 4 > length)
            return -1;
        pos += 4 + 4 * (((Py_ssize_t)p[pos + 2] << 8) | p[pos + 3]);
    }
    Py_ssize_t stop = length;
    if (p[0] & 0x20) {
        unsigned char pad = p[length - 1];
        if (pad == 0 || pad > length - 12)
            return -1;
        stop = length - pad;
    }
    if (pos > stop)
        return -1;
    *start = pos;
    *end = stop;
    return 0;
}

/* wire/payload.py vp8_fields, byte for byte. */
static void
vp8_parse(const unsigned char *p, Py_ssize_t length, Vp8Info *info)
{
    info->parsed = 1;
    info->pid_at = info->tl0_at = info->key_at = -1;
    Py_ssize_t pos, end;
    if (payload_bounds(p, length, &pos, &end) < 0 || pos >= end)
        return;
    unsigned char first = p[pos++];
    if (!(first & 0x80) || pos >= end)
        return;
    unsigned char ext = p[pos++];
    if (ext & 0x80) {
        if (pos >= end)
            return;
        if (p[pos] & 0x80) {
            if (pos + 1 >= end)
                return;
            info->pid_at = pos;
            info->pid_bits = 15;
            info->pid = ((unsigned int)(p[pos] & 0x7F) << 8) | p[pos + 1];
            pos += 2;
        } else {
            info->pid_at = pos;
            info->pid_bits = 7;
            info->pid = p[pos] & 0x7F;
            pos += 1;
        }
    }
    if (ext & 0x40) {
        if (pos >= end)
            return;
        info->tl0_at = pos;
        info->tl0 = p[pos];
        pos += 1;
    }
    if (ext & 0x10 && pos < end) {
        info->key_at = pos;
        info->keyidx = p[pos] & 0x1F;
    }
}

/* The bytes of ``obj`` as an extension id table: 1 (``*table`` set), 0 for
 * None (no rewrite), -1 with an exception. */
static int
remap_table(PyObject *obj, const unsigned char **table)
{
    *table = NULL;
    if (obj == NULL || obj == Py_None)
        return 0;
    if (!PyBytes_Check(obj) || PyBytes_GET_SIZE(obj) < 16) {
        PyErr_SetString(PyExc_TypeError, "ext_remap must be 16 bytes or None");
        return -1;
    }
    *table = (const unsigned char *)PyBytes_AS_STRING(obj);
    return 1;
}

/* The packet a subscriber gets, in ``scratch``: header rewritten and, with a
 * table, extension ids remapped. */
static void
build(const unsigned char *packet, Py_ssize_t length, unsigned long b1, unsigned long seq,
      unsigned long ts, unsigned long ssrc, const unsigned char *remap)
{
    memcpy(scratch, packet, (size_t)length);
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
    if (remap != NULL)
        remap_ids(scratch, length, remap);
}

/* -- Forwarder: the per-subscriber state the fan-out reads and writes ------
 *
 * DownTrack (media/downtrack.py) derives from this type. Its forwarding fields
 * live here as C members, so the fan-out below forwards a packet to a
 * subscriber in steady state (synced, not waiting for a keyframe) through its
 * SendTarget without running Python; every other case calls the DownTrack's
 * own forward(), which stays the reference. */

typedef struct {
    PyObject_HEAD
    PyObject *target;    /* the subscriber's send target (native ones are sent to here) */
    PyObject *ext_remap; /* bytes, or None: no extension id rewrite */
    unsigned int seq_off;
    unsigned int ts_off;
    unsigned int seq_out;
    unsigned int ts_out;
    unsigned int ssrc;
    int payload_type;
    char needs_keyframe;
    char synced;
    char switching; /* between two layers until a keyframe: Python decides */
    char vp8;       /* continue VP8 picture ids, TL0PICIDX and KEYIDX */
    char svc;       /* VP9: Python picks the spatial layers each packet belongs to */
    unsigned int pid_off;
    unsigned int tl0_off;
    unsigned int keyidx_off;
    unsigned int pid_out; /* the last ones written */
    unsigned int tl0_out;
    unsigned int keyidx_out;
    unsigned long long packets_sent;
    unsigned long long octets_sent;
    double time_out;
    int pad_floor; /* -1, or the input seq from which seq_off applies (padding dropped):
                    * older packets and padding-only ones go to Python */
} Forwarder;

static int
Forwarder_traverse(Forwarder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->target);
    Py_VISIT(self->ext_remap);
    return 0;
}

static int
Forwarder_clear(Forwarder *self)
{
    Py_CLEAR(self->target);
    Py_CLEAR(self->ext_remap);
    return 0;
}

static void
Forwarder_dealloc(Forwarder *self)
{
    PyObject_GC_UnTrack(self);
    Forwarder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Forwarder_members[] = {
    {"target", T_OBJECT_EX, offsetof(Forwarder, target), 0,
     "the subscriber's send target; a native SendTarget is sent to without Python"},
    {"ext_remap", T_OBJECT, offsetof(Forwarder, ext_remap), 0, "extension id table or None"},
    {"seq_off", T_UINT, offsetof(Forwarder, seq_off), 0, NULL},
    {"ts_off", T_UINT, offsetof(Forwarder, ts_off), 0, NULL},
    {"seq_out", T_UINT, offsetof(Forwarder, seq_out), 0, NULL},
    {"ts_out", T_UINT, offsetof(Forwarder, ts_out), 0, NULL},
    {"ssrc", T_UINT, offsetof(Forwarder, ssrc), 0, NULL},
    {"payload_type", T_INT, offsetof(Forwarder, payload_type), 0, NULL},
    {"needs_keyframe", T_BOOL, offsetof(Forwarder, needs_keyframe), 0, NULL},
    {"synced", T_BOOL, offsetof(Forwarder, synced), 0, NULL},
    {"switching", T_BOOL, offsetof(Forwarder, switching), 0, NULL},
    {"vp8", T_BOOL, offsetof(Forwarder, vp8), 0, "continue VP8 picture ids across layers"},
    {"svc", T_BOOL, offsetof(Forwarder, svc), 0, "spatial layers chosen by forward()"},
    {"pid_off", T_UINT, offsetof(Forwarder, pid_off), 0, NULL},
    {"tl0_off", T_UINT, offsetof(Forwarder, tl0_off), 0, NULL},
    {"keyidx_off", T_UINT, offsetof(Forwarder, keyidx_off), 0, NULL},
    {"pid_out", T_UINT, offsetof(Forwarder, pid_out), 0, NULL},
    {"tl0_out", T_UINT, offsetof(Forwarder, tl0_out), 0, NULL},
    {"keyidx_out", T_UINT, offsetof(Forwarder, keyidx_out), 0, NULL},
    {"packets_sent", T_ULONGLONG, offsetof(Forwarder, packets_sent), 0, NULL},
    {"octets_sent", T_ULONGLONG, offsetof(Forwarder, octets_sent), 0, NULL},
    {"time_out", T_DOUBLE, offsetof(Forwarder, time_out), 0, NULL},
    {"pad_floor", T_INT, offsetof(Forwarder, pad_floor), 0, NULL},
    {NULL},
};

static PyTypeObject ForwarderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mediafed.media._forward.Forwarder",
    .tp_doc = "Forwarding state of one subscriber's track (base of DownTrack).",
    .tp_basicsize = sizeof(Forwarder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Forwarder_dealloc,
    .tp_traverse = (traverseproc)Forwarder_traverse,
    .tp_clear = (inquiry)Forwarder_clear,
    .tp_members = Forwarder_members,
};

static PyObject *str_forward;

/* The fan-out loop. ``args`` are the Python objects of the eight fanout()
 * arguments when the caller has them; otherwise (NULL) they are made on the
 * first DownTrack that needs its Python forward(). 0 or -1 with an exception.
 * ``packet`` must stay valid across Python calls (the caller holds its owner). */
static int
fanout_list(PyObject *list, PyObject *packet_obj, const unsigned char *packet, Py_ssize_t length,
            unsigned long b1, unsigned long seq, unsigned long ts, int keyframe, double now,
            PyObject *const *args)
{
    PyObject *made[8] = {NULL};
    int failed = 0;
    Vp8Info vp8 = {0};
    /* Padding-only packets are dropped (and numbered around) by the Python forward(). */
    Py_ssize_t pay_start, pay_end;
    int padding = (packet[0] & 0x20) && payload_bounds(packet, length, &pay_start, &pay_end) == 0 &&
                  pay_start == pay_end;
    /* The list may change under a Python forward(): index it afresh each turn. */
    for (Py_ssize_t i = 0; !failed && i < PyList_GET_SIZE(list); i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        Py_INCREF(item);
        int done = 0;
        if (PyObject_TypeCheck(item, &ForwarderType)) {
            Forwarder *f = (Forwarder *)item;
            const unsigned char *table = NULL;
            if (!padding && !f->needs_keyframe && f->synced && !f->switching && !f->svc &&
                (f->pad_floor < 0 || ((seq - (unsigned long)f->pad_floor) & 0xFFFFUL) < 0x8000UL) &&
                f->target != NULL &&
                PyObject_TypeCheck(f->target, transport->send_target_type) &&
                remap_table(f->ext_remap, &table) >= 0) {
                /* No Python runs from here to the end of the send (but an ICE-TCP
                 * connection's writer, which touches no forwarding state). */
                unsigned long seq_out = (seq + f->seq_off) & 0xFFFFUL;
                unsigned long ts_out = (ts + f->ts_off) & 0xFFFFFFFFUL;
                unsigned int pid_out = f->pid_out, tl0_out = f->tl0_out, key_out = f->keyidx_out;
                build(packet, length, (b1 & 0x80) | ((unsigned long)f->payload_type & 0x7F),
                      seq_out, ts_out, f->ssrc, table);
                if (f->vp8) {
                    if (!vp8.parsed)
                        vp8_parse(packet, length, &vp8);
                    if (vp8.pid_at >= 0) {
                        pid_out = (vp8.pid + f->pid_off) & (vp8.pid_bits == 15 ? 0x7FFFU : 0x7FU);
                        if (vp8.pid_bits == 15) {
                            scratch[vp8.pid_at] = (unsigned char)(0x80 | (pid_out >> 8));
                            scratch[vp8.pid_at + 1] = (unsigned char)pid_out;
                        } else {
                            scratch[vp8.pid_at] = (unsigned char)pid_out;
                        }
                    }
                    if (vp8.tl0_at >= 0) {
                        tl0_out = (vp8.tl0 + f->tl0_off) & 0xFFU;
                        scratch[vp8.tl0_at] = (unsigned char)tl0_out;
                    }
                    if (vp8.key_at >= 0) {
                        key_out = (vp8.keyidx + f->keyidx_off) & 0x1FU;
                        scratch[vp8.key_at] =
                            (unsigned char)((scratch[vp8.key_at] & 0xE0) | key_out);
                    }
                }
                long sent = transport->queue_buffer(f->target, scratch, length);
                if (sent >= 0) {
                    if (((seq_out - f->seq_out) & 0xFFFFUL) < 0x8000UL) {
                        /* the newest so far: a late packet must not move back the
                         * point the next switch continues from */
                        f->seq_out = (unsigned int)seq_out;
                        f->ts_out = (unsigned int)ts_out;
                        f->pid_out = pid_out;
                        f->tl0_out = tl0_out;
                        f->keyidx_out = key_out;
                        f->time_out = now;
                    }
                    f->packets_sent += 1;
                    f->octets_sent += (unsigned long long)length;
                }
                done = 1;
            } else if (PyErr_Occurred()) {
                PyErr_Clear(); /* a bad ext_remap: the Python forward() says so */
            }
        }
        if (!done)
            transport->flush(); /* what is queued goes before any Python runs */
        if (!done && !failed && args == NULL && made[0] == NULL) {
            made[0] = list;
            Py_INCREF(list);
            made[1] = packet_obj;
            Py_INCREF(packet_obj);
            made[2] = PyLong_FromSsize_t(length);
            made[3] = PyLong_FromUnsignedLong(b1);
            made[4] = PyLong_FromUnsignedLong(seq);
            made[5] = PyLong_FromUnsignedLong(ts);
            made[6] = PyBool_FromLong(keyframe);
            made[7] = PyFloat_FromDouble(now);
            for (int k = 2; k < 8; k++)
                if (made[k] == NULL)
                    failed = 1;
        }
        if (!done && !failed) {
            PyObject *const *a = args != NULL ? args : made;
            PyObject *call[9] = {NULL, item, a[1], a[2], a[3], a[4], a[5], a[6], a[7]};
            PyObject *result = PyObject_VectorcallMethod(
                str_forward, call + 1, 8 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            if (result == NULL)
                failed = 1;
            Py_XDECREF(result);
        }
        Py_DECREF(item);
    }
    transport->flush();
    for (int k = 0; k < 8; k++)
        Py_XDECREF(made[k]);
    return failed ? -1 : 0;
}

/* fanout(downtracks, packet, length, b1, seq, ts, keyframe, now) -> None
 *
 * What ``for d in downtracks: d.forward(packet, length, b1, seq, ts, keyframe,
 * now)`` does, with the steady-state case of each Forwarder done here. */
static PyObject *
fanout(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "fanout takes 8 arguments");
        return NULL;
    }
    PyObject *list = args[0];
    if (!PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "fanout: downtracks must be a list");
        return NULL;
    }
    Py_ssize_t length = PyLong_AsSsize_t(args[2]);
    unsigned long b1 = PyLong_AsUnsignedLongMask(args[3]);
    unsigned long seq = PyLong_AsUnsignedLongMask(args[4]);
    unsigned long ts = PyLong_AsUnsignedLongMask(args[5]);
    int keyframe = PyObject_IsTrue(args[6]);
    double now = PyFloat_AsDouble(args[7]);
    if (PyErr_Occurred())
        return NULL;
    if (!PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "fanout: packet must be bytes");
        return NULL;
    }
    if (length < 12 || length > PyBytes_GET_SIZE(args[1]) || length > transport->max_datagram) {
        PyErr_SetString(PyExc_ValueError, "fanout: bad packet length");
        return NULL;
    }
    Py_INCREF(list);
    int failed = fanout_list(list, args[1], (const unsigned char *)PyBytes_AS_STRING(args[1]),
                             length, b1, seq, ts, keyframe, now, args);
    Py_DECREF(list);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

/* -- InStream: a received stream's state (base of Layer) --------------------
 *
 * Layer (media/layer.py) derives from this type: the statistics its receive
 * path keeps (RFC 3550 A.3 and A.8), its retransmission cache and the list of
 * DownTracks forwarding it live here, so receive_rtp() below does what
 * Layer.receive does (the reference) without running Python for a packet
 * in order; gaps (NACK bookkeeping), keyframe detection for waiting
 * subscribers and the cache stay Python calls. */

typedef struct {
    PyObject_HEAD
    PyObject *track;
    PyObject *downtracks; /* list of DownTracks */
    PyObject *cache;      /* RetransmissionCache */
    PyObject *missing;    /* dict: sequence -> [last NACK time, tries] */
    long long received;
    long long octets;
    long long cycles;
    long base_seq; /* -1 before the first packet */
    long highest_seq;
    long last_seq;
    unsigned int last_ts;
    double last_transit;
    double jitter;
    double last_packet_at;
    double last_keyframe_at;
    int clock_rate;
    int keyframe_waiters;
    int level;
} InStream;

static int
InStream_traverse(InStream *self, visitproc visit, void *arg)
{
    Py_VISIT(self->track);
    Py_VISIT(self->downtracks);
    Py_VISIT(self->cache);
    Py_VISIT(self->missing);
    return 0;
}

static int
InStream_clear(InStream *self)
{
    Py_CLEAR(self->track);
    Py_CLEAR(self->downtracks);
    Py_CLEAR(self->cache);
    Py_CLEAR(self->missing);
    return 0;
}

static void
InStream_dealloc(InStream *self)
{
    PyObject_GC_UnTrack(self);
    InStream_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef InStream_members[] = {
    {"track", T_OBJECT, offsetof(InStream, track), 0, NULL},
    {"downtracks", T_OBJECT, offsetof(InStream, downtracks), 0, NULL},
    {"cache", T_OBJECT, offsetof(InStream, cache), 0, NULL},
    {"missing", T_OBJECT, offsetof(InStream, missing), 0, NULL},
    {"received", T_LONGLONG, offsetof(InStream, received), 0, NULL},
    {"octets", T_LONGLONG, offsetof(InStream, octets), 0, NULL},
    {"cycles", T_LONGLONG, offsetof(InStream, cycles), 0, NULL},
    {"base_seq", T_LONG, offsetof(InStream, base_seq), 0, NULL},
    {"highest_seq", T_LONG, offsetof(InStream, highest_seq), 0, NULL},
    {"last_seq", T_LONG, offsetof(InStream, last_seq), 0, NULL},
    {"last_ts", T_UINT, offsetof(InStream, last_ts), 0, NULL},
    {"last_transit", T_DOUBLE, offsetof(InStream, last_transit), 0, NULL},
    {"jitter", T_DOUBLE, offsetof(InStream, jitter), 0, NULL},
    {"last_packet_at", T_DOUBLE, offsetof(InStream, last_packet_at), 0, NULL},
    {"last_keyframe_at", T_DOUBLE, offsetof(InStream, last_keyframe_at), 0, NULL},
    {"clock_rate", T_INT, offsetof(InStream, clock_rate), 0, NULL},
    {"keyframe_waiters", T_INT, offsetof(InStream, keyframe_waiters), 0, NULL},
    {"level", T_INT, offsetof(InStream, level), 0, NULL},
    {NULL},
};

static PyTypeObject InStreamType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mediafed.media._forward.InStream",
    .tp_doc = "Receive state of one RTP stream (base of Layer).",
    .tp_basicsize = sizeof(InStream),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)InStream_dealloc,
    .tp_traverse = (traverseproc)InStream_traverse,
    .tp_clear = (inquiry)InStream_clear,
    .tp_members = InStream_members,
};

static PyObject *str_view, *str_put, *str_note_missing, *str_is_keyframe, *str_nack_enabled;

/* Layer._account: receive statistics of one packet; 0, or -1 with an exception. */
static int
account(InStream *self, long seq, unsigned long ts, Py_ssize_t length, double now)
{
    self->received += 1;
    self->last_packet_at = now;
    /* octets (the layer's bitrate) count new packets and repairs of missing ones,
     * not duplicates: libwebrtc pads with copies of recent packets over RTX */
    if (self->base_seq < 0) {
        self->octets += length;
        self->base_seq = seq;
        self->highest_seq = seq;
        self->last_seq = seq;
        self->last_ts = (unsigned int)ts;
        self->last_transit = now * self->clock_rate - (double)ts;
        return 0;
    }
    long delta = (seq - self->highest_seq) & 0xFFFF;
    if (0 < delta && delta < 0x8000) {
        self->octets += length;
        if (delta > 1 && self->track != NULL) {
            PyObject *track = self->track; /* held: the lookup may run Python */
            Py_INCREF(track);
            PyObject *nack = PyObject_GetAttr(track, str_nack_enabled);
            Py_DECREF(track);
            int enabled = nack == NULL ? -1 : PyObject_IsTrue(nack);
            Py_XDECREF(nack);
            if (enabled < 0)
                return -1;
            if (enabled) {
                PyObject *first = PyLong_FromLong(self->highest_seq + 1);
                PyObject *count = PyLong_FromLong(delta - 1);
                PyObject *when = PyFloat_FromDouble(now);
                PyObject *result = NULL;
                if (first != NULL && count != NULL && when != NULL)
                    result = PyObject_CallMethodObjArgs((PyObject *)self, str_note_missing, first,
                                                        count, when, NULL);
                Py_XDECREF(first);
                Py_XDECREF(count);
                Py_XDECREF(when);
                if (result == NULL)
                    return -1;
                Py_DECREF(result);
            }
        }
        if (seq < self->highest_seq)
            self->cycles += 0x10000;
        self->highest_seq = seq;
        self->last_seq = seq;
        self->last_ts = (unsigned int)ts;
    } else if (self->missing != NULL && PyDict_Check(self->missing) &&
               PyDict_GET_SIZE(self->missing) > 0) {
        PyObject *key = PyLong_FromLong(seq);
        if (key == NULL)
            return -1;
        if (PyDict_DelItem(self->missing, key) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
                Py_DECREF(key);
                return -1;
            }
            PyErr_Clear();
        } else {
            self->octets += length;
        }
        Py_DECREF(key);
    }
    double transit = now * self->clock_rate - (double)ts;
    double d = fabs(transit - self->last_transit);
    self->last_transit = transit;
    self->jitter += (d - self->jitter) / 16.0;
    return 0;
}

/* Layer.receive on a packet in memory: 0, or -1 with an exception set.
 *
 * Python runs in the middle (gap bookkeeping, the cache, keyframe detection,
 * DownTracks' own forward()), and may change any field of the layer: every
 * object is read afresh, checked and held where it is used, never kept from
 * before a call. */
static int
ingest(InStream *self, const unsigned char *p, Py_ssize_t length, double now)
{
    if (length < 12 || length > transport->max_datagram) {
        PyErr_SetString(PyExc_ValueError, "receive_rtp: bad packet length");
        return -1;
    }
    unsigned long b1 = p[1];
    long seq = ((long)p[2] << 8) | p[3];
    unsigned long ts = ((unsigned long)p[4] << 24) | ((unsigned long)p[5] << 16) |
                       ((unsigned long)p[6] << 8) | p[7];
    /* The packet is copied first: ``p`` (the socket's buffer) is not ours
     * once Python runs. */
    PyObject *packet = PyBytes_FromStringAndSize((const char *)p, length);
    if (packet == NULL)
        return -1;
    int failed = 1;
    PyObject *seq_obj = NULL, *now_obj = NULL, *cache = NULL, *list = NULL;
    Py_INCREF(self);
    /* the layer's bitrate counts media, not padding */
    Py_ssize_t pay_start, pay_end;
    int padding =
        (p[0] & 0x20) && payload_bounds(p, length, &pay_start, &pay_end) == 0 && pay_start == pay_end;
    if (account(self, seq, ts, padding ? 0 : length, now) < 0)
        goto done;
    seq_obj = PyLong_FromLong(seq);
    now_obj = PyFloat_FromDouble(now);
    if (seq_obj == NULL || now_obj == NULL)
        goto done;
    cache = self->cache;
    if (cache == NULL || cache == Py_None) {
        PyErr_SetString(PyExc_TypeError, "receive_rtp: layer.cache is unset");
        cache = NULL;
        goto done;
    }
    Py_INCREF(cache);
    PyObject *put = PyObject_CallMethodObjArgs(cache, str_put, seq_obj, packet, now_obj, NULL);
    if (put == NULL)
        goto done;
    int fresh = PyObject_IsTrue(put);
    Py_DECREF(put);
    if (fresh < 0)
        goto done;
    if (!fresh) {
        failed = 0; /* a duplicate: subscribers had it (or asked for it and got it) */
        goto done;
    }
    int keyframe = 0;
    if (self->keyframe_waiters) {
        PyObject *size = PyLong_FromSsize_t(length);
        PyObject *answer = size == NULL ? NULL
                                        : PyObject_CallMethodObjArgs((PyObject *)self,
                                                                     str_is_keyframe, packet, size,
                                                                     NULL);
        Py_XDECREF(size);
        keyframe = answer == NULL ? -1 : PyObject_IsTrue(answer);
        Py_XDECREF(answer);
        if (keyframe < 0)
            goto done;
        if (keyframe)
            self->last_keyframe_at = now;
    }
    list = self->downtracks;
    if (list == NULL || !PyList_Check(list)) {
        PyErr_SetString(PyExc_TypeError, "receive_rtp: layer.downtracks must be a list");
        list = NULL;
        goto done;
    }
    Py_INCREF(list);
    failed = fanout_list(list, packet, (const unsigned char *)PyBytes_AS_STRING(packet), length, b1,
                         (unsigned long)seq, ts, keyframe, now, NULL);
done:
    Py_XDECREF(list);
    Py_XDECREF(cache);
    Py_XDECREF(seq_obj);
    Py_XDECREF(now_obj);
    Py_DECREF(packet);
    Py_DECREF(self);
    return failed ? -1 : 0;
}

/* receive_rtp(layer, buf, length, now) -> None
 *
 * Layer.receive (media/layer.py) for one plaintext RTP packet in the
 * PacketBuffer ``buf``: statistics, the retransmission cache, keyframe
 * detection while subscribers wait for one, and the fan-out. */
static PyObject *
receive_rtp(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "receive_rtp takes 4 arguments");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], &InStreamType)) {
        PyErr_SetString(PyExc_TypeError, "receive_rtp: layer must be an InStream");
        return NULL;
    }
    Py_ssize_t length = PyLong_AsSsize_t(args[2]);
    double now = PyFloat_AsDouble(args[3]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *view_obj = PyObject_GetAttr(args[1], str_view);
    if (view_obj == NULL)
        return NULL;
    Py_buffer view;
    int got = PyObject_GetBuffer(view_obj, &view, PyBUF_SIMPLE);
    Py_DECREF(view_obj);
    if (got < 0)
        return NULL;
    int failed;
    if (length < 0 || length > view.len) {
        PyErr_SetString(PyExc_ValueError, "receive_rtp: bad packet length");
        failed = 1;
    } else {
        failed = ingest((InStream *)args[0], (const unsigned char *)view.buf, length, now);
    }
    PyBuffer_Release(&view);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

/* remap_and_scan(view, length, table, twcc_id, level_id) -> (twcc_seq, level)
 *
 * wire/rtp.py remap_and_scan, byte for byte: one pass over one-byte header
 * extensions that reads the transport-wide sequence number and the audio
 * level and rewrites every id in place through ``table``. */
static PyObject *
remap_and_scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "remap_and_scan takes 5 arguments");
        return NULL;
    }
    Py_ssize_t length = PyLong_AsSsize_t(args[1]);
    long twcc_id = PyLong_AsLong(args[3]);
    long level_id = PyLong_AsLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    Py_buffer view, table;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[2], &table, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    long twcc = -1, level = -1;
    if (table.len < 16 || length < 1 || length > view.len) {
        PyErr_SetString(PyExc_ValueError,
                        "remap_and_scan: the table needs 16 entries and length must fit the buffer");
    } else {
        scan_extensions((unsigned char *)view.buf, length, (const unsigned char *)table.buf,
                        twcc_id, level_id, &twcc, &level);
    }
    PyBuffer_Release(&view);
    PyBuffer_Release(&table);
    if (PyErr_Occurred())
        return NULL;
    return Py_BuildValue("(ll)", twcc, level);
}

/* -- PeerBase: a peer connection as the read loop hands it packets ----------
 *
 * MediaPeer (media/peer.py) derives from this type; ``on_rtp`` is its
 * EndpointHandler method. A packet of a stream it knows by SSRC is taken here
 * (the extension pass, transport-cc record, audio level, mute, the layer's
 * receive step); anything else - RTX, simulcast SSRCs on first sight, probes -
 * goes to the Python ``_on_other_rtp``. media/native.py has the reference. */

typedef struct {
    PyObject_HEAD
    PyObject *layers_by_ssrc; /* dict: SSRC -> Layer */
    PyObject *twcc;           /* TransportCcRecorder, or None */
    int twcc_id;              /* the publisher's transport-wide-cc extension id; 0: none */
} PeerBase;

static int
PeerBase_traverse(PeerBase *self, visitproc visit, void *arg)
{
    Py_VISIT(self->layers_by_ssrc);
    Py_VISIT(self->twcc);
    return 0;
}

static int
PeerBase_clear(PeerBase *self)
{
    Py_CLEAR(self->layers_by_ssrc);
    Py_CLEAR(self->twcc);
    return 0;
}

static void
PeerBase_dealloc(PeerBase *self)
{
    PyObject_GC_UnTrack(self);
    PeerBase_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *str_ext_table, *str_level_id, *str_record, *str_muted, *str_on_other_rtp;

static long
long_attr(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        return -1;
    long result = PyLong_AsLong(value);
    Py_DECREF(value);
    return result;
}

/* A packet of ``layer``'s stream: the extension pass (ids rewritten to the
 * subscribers'), transport-cc, audio level, mute, the receive step. 0, or -1
 * with an exception. ``layer`` is held by the caller. */
static int
known_rtp(PeerBase *self, InStream *layer, unsigned char *buf, Py_ssize_t len, double now)
{
    int failed = 1;
    PyObject *track = layer->track, *table = NULL;
    Py_INCREF(track);
    table = PyObject_GetAttr(track, str_ext_table);
    if (table == NULL)
        goto out;
    if (!PyBytes_Check(table) || PyBytes_GET_SIZE(table) < 16) {
        PyErr_SetString(PyExc_TypeError, "track.ext_table must be 16 bytes");
        goto out;
    }
    long level_id = long_attr(track, str_level_id);
    if (level_id == -1 && PyErr_Occurred())
        goto out;
    long twcc = -1, level = -1;
    scan_extensions(buf, len, (const unsigned char *)PyBytes_AS_STRING(table), self->twcc_id,
                    level_id, &twcc, &level);
    if (twcc >= 0 && self->twcc != NULL && self->twcc != Py_None) {
        PyObject *recorder = self->twcc;
        Py_INCREF(recorder);
        PyObject *seq_obj = PyLong_FromLong(twcc);
        PyObject *at = PyLong_FromLongLong((long long)(now * 1000000.0));
        PyObject *result = seq_obj == NULL || at == NULL
                               ? NULL
                               : PyObject_CallMethodObjArgs(recorder, str_record, seq_obj, at,
                                                            NULL);
        Py_XDECREF(seq_obj);
        Py_XDECREF(at);
        Py_DECREF(recorder);
        if (result == NULL)
            goto out;
        Py_DECREF(result);
    }
    if (level >= 0)
        layer->level = (int)level;
    PyObject *muted_obj = PyObject_GetAttr(track, str_muted);
    int muted = muted_obj == NULL ? -1 : PyObject_IsTrue(muted_obj);
    Py_XDECREF(muted_obj);
    if (muted < 0)
        goto out;
    if (!muted && ingest(layer, buf, len, now) < 0)
        goto out;
    failed = 0;
out:
    Py_XDECREF(table);
    Py_DECREF(track);
    return failed ? -1 : 0;
}

/* on_rtp(endpoint, buf, length, now): plaintext RTP of this peer's endpoint in
 * the PacketBuffer ``buf`` (EndpointHandler.on_rtp, transport/endpoint.py). */
static PyObject *
PeerBase_on_rtp(PeerBase *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "on_rtp takes 4 arguments");
        return NULL;
    }
    Py_ssize_t length = PyLong_AsSsize_t(args[2]);
    double now = PyFloat_AsDouble(args[3]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *view_obj = PyObject_GetAttr(args[1], str_view);
    if (view_obj == NULL)
        return NULL;
    Py_buffer view;
    int got = PyObject_GetBuffer(view_obj, &view, PyBUF_WRITABLE);
    Py_DECREF(view_obj);
    if (got < 0)
        return NULL;
    PyObject *layer = NULL;
    int failed = 0;
    unsigned char *buf = (unsigned char *)view.buf;
    if (length >= 12 && length <= view.len && self->layers_by_ssrc != NULL &&
        PyDict_Check(self->layers_by_ssrc)) {
        unsigned long ssrc = ((unsigned long)buf[8] << 24) | ((unsigned long)buf[9] << 16) |
                             ((unsigned long)buf[10] << 8) | buf[11];
        PyObject *key = PyLong_FromUnsignedLong(ssrc);
        if (key == NULL) {
            failed = 1;
        } else {
            layer = PyDict_GetItemWithError(self->layers_by_ssrc, key);
            Py_DECREF(key);
            if (layer == NULL && PyErr_Occurred())
                failed = 1;
            Py_XINCREF(layer);
        }
    }
    if (!failed && layer != NULL && PyObject_TypeCheck(layer, &InStreamType) &&
        ((InStream *)layer)->track != NULL) {
        failed = known_rtp(self, (InStream *)layer, buf, length, now) < 0;
        Py_DECREF(layer);
        PyBuffer_Release(&view);
        if (failed)
            return NULL;
        Py_RETURN_NONE;
    }
    Py_XDECREF(layer);
    PyBuffer_Release(&view);
    if (failed)
        return NULL;
    PyObject *call[5] = {(PyObject *)self, args[0], args[1], args[2], args[3]};
    return PyObject_VectorcallMethod(str_on_other_rtp, call, 5, NULL);
}

static PyMethodDef PeerBase_methods[] = {
    {"on_rtp", (PyCFunction)(void (*)(void))PeerBase_on_rtp, METH_FASTCALL,
     "EndpointHandler.on_rtp: a known stream's packet natively, any other to _on_other_rtp."},
    {NULL},
};

static PyMemberDef PeerBase_members[] = {
    {"layers_by_ssrc", T_OBJECT, offsetof(PeerBase, layers_by_ssrc), 0, NULL},
    {"twcc", T_OBJECT, offsetof(PeerBase, twcc), 0, NULL},
    {"twcc_id", T_INT, offsetof(PeerBase, twcc_id), 0, NULL},
    {NULL},
};

static PyTypeObject PeerBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mediafed.media._forward.PeerBase",
    .tp_doc = "A publishing peer connection's stream table (base of MediaPeer).",
    .tp_basicsize = sizeof(PeerBase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)PeerBase_dealloc,
    .tp_traverse = (traverseproc)PeerBase_traverse,
    .tp_clear = (inquiry)PeerBase_clear,
    .tp_methods = PeerBase_methods,
    .tp_members = PeerBase_members,
};

static PyMethodDef methods[] = {
    {"fanout", (PyCFunction)(void (*)(void))fanout, METH_FASTCALL,
     "Forward one packet to every DownTrack of a list."},
    {"receive_rtp", (PyCFunction)(void (*)(void))receive_rtp, METH_FASTCALL,
     "Layer.receive: account, cache, keyframe detection and fan-out of one packet."},
    {"remap_and_scan", (PyCFunction)(void (*)(void))remap_and_scan, METH_FASTCALL,
     "Read twcc and audio level, rewrite one-byte extension ids in place."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mediafed.media._forward", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__forward(void)
{
    transport = (MediafedTransportAPI *)PyCapsule_Import(TRANSPORT_API_CAPSULE, 0);
    if (transport == NULL)
        return NULL;
    if (transport->version != TRANSPORT_API_VERSION) {
        PyErr_SetString(PyExc_ImportError,
                        "mediafed.transport._transport is another version; rebuild both");
        return NULL;
    }
    scratch = PyMem_Malloc((size_t)transport->buffer_size);
    if (scratch == NULL)
        return PyErr_NoMemory();
    if (PyType_Ready(&ForwarderType) < 0 || PyType_Ready(&InStreamType) < 0 ||
        PyType_Ready(&PeerBaseType) < 0)
        return NULL;
    static const struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&str_view, "view"},
        {&str_put, "put"},
        {&str_note_missing, "_note_missing"},
        {&str_is_keyframe, "_is_keyframe"},
        {&str_nack_enabled, "nack_enabled"},
        {&str_forward, "forward"},
        {&str_ext_table, "ext_table"},
        {&str_level_id, "level_id"},
        {&str_record, "record"},
        {&str_muted, "muted"},
        {&str_on_other_rtp, "_on_other_rtp"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL)
            return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyTypeObject *types[] = {&ForwarderType, &InStreamType, &PeerBaseType};
    const char *type_names[] = {"Forwarder", "InStream", "PeerBase"};
    for (int i = 0; i < 3; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, type_names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
