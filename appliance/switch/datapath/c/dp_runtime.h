/* The fixed half of every compiled datapath: maps shared by all tables,
 * the header parser, and the output machinery.  The generated half (one
 * function per flow table) is written by compiler.py and includes this.
 *
 * Outputs are deferred by one step: an output becomes "pending" and is sent
 * as a clone only when another output follows, or before a header rewrite
 * (so it leaves with the headers it had when the action ran).  The last
 * pending output is the program's verdict: bpf_redirect for a port,
 * TC_ACT_OK for NORMAL (the Linux bridge behind the port takes it),
 * TC_ACT_SHOT when nothing was output.  A single output therefore costs no
 * clone at all.
 *
 * Built with -DDP_TEST, outputs are recorded in dp_trace instead of sent,
 * and the input port comes from skb->cb[0]; BPF_PROG_TEST_RUN then shows
 * exactly what the production build would have done.
 */
#ifndef DP_RUNTIME_H
#define DP_RUNTIME_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "dp_contract.h"

/* The most the parser reads: Ethernet + 802.1Q + IPv6 + a neighbour
 * solicitation/advertisement (18 + 40 + 24 = 82 bytes) and its options up
 * to five 8-byte options (Linux sends one; IPv4 with options and its
 * ports, 18 + 60 + 4, fits too); IPv6 extension headers up to DP_EXT_END
 * and an ICMPv6 header behind them (18 + 124 + 8 for the verifier). */
#define DP_PARSE_BYTES 152
/* ND options start 24 bytes after the ICMPv6 header and are multiples of
 * 8 bytes: the last one read starts at DP_ND_OPT_LAST, so every read stays
 * within DP_PARSE_BYTES (18 + 40 + 56 + 8 = 122) for the verifier on the
 * stack copy as well as on the packet. */
#define DP_ND_OPT_LAST 56
#define DP_ND_OPTS 5
/* IPv6 extension headers walked, and where the transport header may start
 * at the latest (bytes after the IPv6 header's start). */
#define DP_IPV6_EXTS 6
#define DP_EXT_END 96

#ifndef DP_STATS_SLOTS
#define DP_STATS_SLOTS 1024
#endif

#ifndef DP_N_REGS
#define DP_N_REGS 1
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);              /* OpenFlow port */
	__type(value, struct dp_port);
} dp_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);              /* ifindex */
	__type(value, __u32);            /* OpenFlow port */
} dp_ifports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DP_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct dp_flood_slot);
} dp_flood_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DP_STATS_SLOTS);
	__type(key, __u32);
	__type(value, struct dp_stats);
} dp_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DP_MISC_MAX);
	__type(key, __u32);
	__type(value, __u64);
} dp_misc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} dp_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dp_health);
} dp_health SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, DP_MAX_MACS);
	__type(key, __u64);              /* MAC */
	__type(value, struct dp_mac_stats);
} dp_macs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DP_MAX_PAUSED);
	__type(key, __u64);              /* MAC */
	__type(value, __u32);
} dp_paused SEC(".maps");

#ifdef DP_TEST
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dp_trace);
} dp_trace SEC(".maps");
#endif

enum { DP_PEND_NONE = 0, DP_PEND_PORT = 1, DP_PEND_NORMAL = 2 };

/* "No flow yet" for a tuple-space probe.  Read from .data, which the
 * verifier cannot see into, rather than written as a constant: a constant
 * made every probe's comparisons decidable, so each of the 2^tuples hit/miss
 * paths carried a distinct precise `best` and none could be pruned (a
 * generated 17-flow, three-table table took past 10^6 instructions). */
__u32 dp_no_rank = 0xffffffff;

/* What the actions have sent so far.  Kept in a per-CPU map, not in
 * dp_state on the stack: the verifier knows every stack value exactly, so
 * each combination of pending output and flags that an action list can
 * leave was a distinct state for every table after it, and a table that
 * resubmits twice multiplied them (a generated 17-flow, three-table table
 * took more than 10^6 instructions).  Map memory it does not track, so
 * those paths merge.  tc programs do not nest on a CPU: a clone sent to a
 * port's ingress is queued, not run inside this one. */
struct dp_out {
	__u32 pend_kind;
	__u32 pend_ifindex;
	__u32 pend_flags;
	__u32 pend_port;
	__u32 pend_mark;            /* bits added to skb->mark for the clone */
	__u8 to_home;               /* an output went towards a home port (or NORMAL) */
	__u8 off_dns;               /* an output went elsewhere than a DP_PORT_DNS port */
	__u8 pad[2];
	__u32 blind[2];             /* dp_blind's: a header value passed through memory */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dp_out);
} dp_outs SEC(".maps");

struct dp_state {
	struct dp_key key;          /* headers as the actions have left them;
				     * key.in_port is the port lookups use, which
				     * resubmit(PORT,T) changes for one lookup */
	__u16 in_port;              /* the real input port, seen by actions */
	__u32 in_ifindex;
	__u32 mark;                 /* skb->mark with the hop count advanced */
	struct dp_out *out;
	__u32 regs[DP_N_REGS];      /* OpenFlow registers; only as many as the flows use */
	__u64 mac_dst;              /* dl_dst as received, for dp_macs */
	__u32 wire_bytes;           /* the frame(s) as the wire carries them */
	__u32 wire_packets;
	__u32 in_flags;             /* the input port's DP_PORT_* */
	__u8 in_home;               /* entered on a DP_PORT_HOME port */
	__u8 pause_dns;             /* DNS from a paused device: only to a DP_PORT_DNS port */
#ifdef DP_TEST
	struct dp_trace *trace;
#endif
};

static __always_inline void dp_misc_add(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&dp_misc, &idx);
	if (v)
		*v += 1;
}

static __always_inline __u64 dp_load_mac(const __u8 *p)
{
	return ((__u64)p[0] << 40) | ((__u64)p[1] << 32) | ((__u64)p[2] << 24) |
	       ((__u64)p[3] << 16) | ((__u64)p[4] << 8) | (__u64)p[5];
}

static __always_inline __u32 dp_load_be32(const __u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

static __always_inline __u64 dp_load_be64(const __u8 *p)
{
	return ((__u64)dp_load_be32(p) << 32) | dp_load_be32(p + 4);
}

/* The target and link-layer address options of an NS/NA (ICMPv6 type
 * 135/136, code 0) at l4, as OVS's parse_icmpv6: a truncated target leaves
 * all three 0; an option of length 0 or past the end stops the walk; a
 * second source (or target) link-layer option makes the message invalid
 * and all three read 0.  Options after DP_ND_OPT_LAST are not seen.
 * IPv6 frames only: a flow can ask for these fields there only. */
static __always_inline void dp_parse_nd(struct dp_key *k, __u8 *l3, __u8 *end)
{
	/* From l3, not from the l4 the caller shares with IPv4 (whose options
	 * make it variable): the verifier sees a fixed offset. */
	__u8 *l4 = l3 + 40;
	__u64 sll = 0, tll = 0;
	__u32 off = 24, len;
	__u8 *opt;
	int i;

	if (l4 + 24 > end)
		return;
#pragma unroll
	for (i = 0; i < DP_ND_OPTS; i++) {
		if (off > DP_ND_OPT_LAST)
			break;
		/* Re-bound off in the register the read uses: clang moves the
		 * check above away from the verifier's view.  off is a multiple
		 * of 8 up to 56 here, so the mask changes nothing. */
		asm volatile("%[o] &= 0x38" : [o] "+r"(off));
		opt = l4 + off;
		if (opt + 8 > end)
			break;
		len = (__u32)opt[1] * 8;
		if (!len || opt + len > end)
			break;
		if (len == 8 && opt[0] == 1) {
			if (sll)
				return;
			sll = dp_load_mac(opt + 2);
		} else if (len == 8 && opt[0] == 2) {
			if (tll)
				return;
			tll = dp_load_mac(opt + 2);
		}
		off += len;
	}
	k->nd_target[0] = dp_load_be64(l4 + 8);
	k->nd_target[1] = dp_load_be64(l4 + 16);
	k->nd_sll = sll;
	k->nd_tll = tll;
}

/* Fill k from the frame's first bytes [data, end), reading exactly what
 * packet.py's Packet.from_bytes reads (the reference classifier's view):
 * a header cut off by `end` is absent and its fields read 0.  A VLAN tag
 * is either already taken off by the receiving device (skb->vlan_tci) or
 * still in the data (test runs, devices without offload); both give the
 * same key.  Returns -1 for a frame too short for its Ethernet/802.1Q
 * header.  `data` is either the packet (direct access) or a copy on the
 * stack: inlined once for each, so the verifier checks both. */
static __always_inline int dp_parse_from(struct __sk_buff *skb, struct dp_key *k,
					 __u8 *data, __u8 *end)
{
	__u8 *l3, *l4, nd = 0;
	__u16 proto;
	__u32 ihl;

	if (data + 14 > end)
		return -1;
	k->dl_dst = dp_load_mac(data);
	k->dl_src = dp_load_mac(data + 6);
	proto = ((__u16)data[12] << 8) | data[13];
	l3 = data + 14;
	if (skb->vlan_present)
		k->vlan_tci = skb->vlan_tci | DP_VLAN_PRESENT;
	if (proto == ETH_P_8021Q) {
		if (l3 + 4 > end)
			return -1;
		if (!k->vlan_tci)
			k->vlan_tci = (((__u16)l3[0] << 8) | l3[1]) | DP_VLAN_PRESENT;
		proto = ((__u16)l3[2] << 8) | l3[3];
		l3 += 4;
	}
	k->dl_type = proto;

	if (proto == ETH_P_ARP) {
		if (l3 + 28 > end)
			return 0;
		/* Ethernet/IPv4 ARP only: htype 1, ptype 0x0800, hlen 6, plen 4. */
		if (l3[0] != 0 || l3[1] != 1 || l3[2] != 0x08 || l3[3] != 0 ||
		    l3[4] != 6 || l3[5] != 4)
			return 0;
		k->arp_op = ((__u16)l3[6] << 8) | l3[7];
		k->arp_sha = dp_load_mac(l3 + 8);
		k->arp_spa = dp_load_be32(l3 + 14);
		k->arp_tha = dp_load_mac(l3 + 18);
		k->arp_tpa = dp_load_be32(l3 + 24);
		return 0;
	}
	if (proto == ETH_P_IP) {
		if (l3 + 20 > end)
			return 0;
		if ((l3[0] >> 4) != 4)
			return 0;
		ihl = (l3[0] & 0x0f) * 4;
		if (ihl < 20)
			return 0;
		if (l3 + ihl > end)
			return 0;
		k->nw_tos = l3[1] & 0xfc;
		k->nw_ttl = l3[8];
		k->nw_proto = l3[9];
		k->nw_src = dp_load_be32(l3 + 12);
		k->nw_dst = dp_load_be32(l3 + 16);
		/* A fragment, the first one too, has no transport fields: OVS's
		 * frag handling "normal" zeroes the ports of every fragment. */
		if ((((__u16)l3[6] << 8) | l3[7]) & 0x3fff)
			return 0;
		l4 = l3 + ihl;
	} else if (proto == ETH_P_IPV6) {
		__u32 off = 40, i;
		__u8 nh, later = 0, frag = 0, *ext;

		if (l3 + 40 > end)
			return 0;
		k->ipv6_src[0] = dp_load_be64(l3 + 8);
		k->ipv6_src[1] = dp_load_be64(l3 + 16);
		k->ipv6_dst[0] = dp_load_be64(l3 + 24);
		k->ipv6_dst[1] = dp_load_be64(l3 + 32);
		/* Extension headers, as OVS's parse_ipv6_ext_hdrs: the transport
		 * header is the one after them (a DNS query behind a destination
		 * option is still udp6,tp_dst=53).  A fragment has no transport
		 * fields (OVS's frag handling "normal" zeroes them in the first
		 * one too); a later one is nw_proto 44.  An extension header cut
		 * off, or one ending past DP_EXT_END, leaves the addresses alone
		 * read (OVS: a truncated header), as do more than DP_IPV6_EXTS. */
		nh = l3[6];
#pragma unroll
		for (i = 0; i < DP_IPV6_EXTS; i++) {
			if (nh != 0 && nh != 43 && nh != 60 && nh != 51 && nh != 44)
				break;
			if (off > DP_EXT_END)
				return 0;
			asm volatile("%[o] &= 0x7c" : [o] "+r"(off));   /* as below */
			ext = l3 + off;
			if (ext + 8 > end)
				return 0;
			if (nh == 44) {
				__u16 offlg = ((__u16)ext[2] << 8) | ext[3];

				nh = ext[0];
				off += 8;
				if (offlg & 0xfff8) {
					later = 1;
					break;
				}
				if (offlg)   /* a first fragment (an atomic one is none) */
					frag = 1;
			} else if (nh == 51) {
				nh = ext[0];
				off += ((__u32)ext[1] + 2) * 4;
			} else {
				nh = ext[0];
				off += ((__u32)ext[1] + 1) * 8;
			}
		}
		if (!later && (nh == 0 || nh == 43 || nh == 60 || nh == 51 || nh == 44 ||
			       off > DP_EXT_END))
			return 0;
		k->nw_tos = ((((__u16)l3[0] << 8) | l3[1]) >> 4) & 0xfc;
		k->ipv6_label = dp_load_be32(l3) & 0xfffff;
		k->nw_ttl = l3[7];
		if (later) {
			k->nw_proto = 44;
			return 0;
		}
		k->nw_proto = nh;
		if (frag)
			return 0;
		nd = off == 40;
		/* off is a multiple of 4 up to DP_EXT_END: the mask changes
		 * nothing but keeps the verifier's bound (DP_PARSE_BYTES has room
		 * for 18 + 124 + 8), which clang's moves lose. */
		asm volatile("%[o] &= 0x7c" : [o] "+r"(off));
		l4 = l3 + off;
	} else {
		return 0;
	}
	if (k->nw_proto == IPPROTO_TCP || k->nw_proto == IPPROTO_UDP) {
		if (l4 + 4 > end)
			return 0;
		k->tp_src = ((__u16)l4[0] << 8) | l4[1];
		k->tp_dst = ((__u16)l4[2] << 8) | l4[3];
	} else if (k->nw_proto == IPPROTO_ICMP) {
		if (l4 + 2 > end)
			return 0;
		k->icmp_type = l4[0];
		k->icmp_code = l4[1];
	} else if (k->nw_proto == 58 /* ICMPv6 */) {
		/* OVS reads ICMPv6 only with its whole 8-byte header. */
		if (l4 + 8 > end)
			return 0;
		k->icmp_type = l4[0];
		k->icmp_code = l4[1];
		/* ND behind an extension header: its type, not its fields. */
		if (nd && l4[1] == 0 && (l4[0] == 135 || l4[0] == 136))
			dp_parse_nd(k, l3, end);
	}
	return 0;
}

/* Frames built in pages (AF_PACKET senders such as trafgen, some drivers)
 * may hold part of their headers outside the linear area that direct
 * access sees.  Copying the few header bytes to the stack costs less than
 * bpf_skb_pull_data, which reallocates the skb's head for every such frame
 * (measured: bench/datapath.py's (b) row).  DP_PARSE_COPY forces the copy,
 * so that test runs (always linear) can check that path too. */
static __always_inline int dp_parse_copy(struct __sk_buff *skb, struct dp_key *k)
{
	__u8 buf[DP_PARSE_BYTES] = {};
	__u32 n = skb->len;

	if (n > DP_PARSE_BYTES)
		n = DP_PARSE_BYTES;
	if (n < 14 || bpf_skb_load_bytes(skb, 0, buf, n) < 0)
		return -1;
	return dp_parse_from(skb, k, buf, buf + n);
}

static __always_inline int dp_parse(struct __sk_buff *skb, struct dp_key *k)
{
#ifndef DP_PARSE_COPY
	__u8 *data = (void *)(long)skb->data;
	__u8 *end = (void *)(long)skb->data_end;

	if (data + DP_PARSE_BYTES <= end || end - data >= skb->len)
		return dp_parse_from(skb, k, data, end);
#endif
	return dp_parse_copy(skb, k);
}

static __always_inline void dp_count(struct dp_state *st, __u32 table, __u32 slot,
				     __u32 len)
{
	struct dp_stats *s = bpf_map_lookup_elem(&dp_stats, &slot);
	if (s) {
		s->packets += 1;
		s->bytes += len;
	}
#ifdef DP_TEST
	if (st->trace) {
		__u32 n = st->trace->n_matches;
		if (n < DP_MAX_TRACE_MATCH) {
			asm volatile("%[n] &= 15" : [n] "+r"(n));
			st->trace->matches[n].table = table;
			st->trace->matches[n].slot = slot;
			st->trace->n_matches = n + 1;
		}
	}
#endif
}

static __always_inline void dp_miss(struct dp_state *st, __u32 table)
{
#ifdef DP_TEST
	dp_count(st, table, 0xffffffff, 0);
#endif
}

#ifdef DP_TEST
static __always_inline void dp_trace_out(struct dp_state *st, __u32 port)
{
	if (st->trace) {
		__u32 n = st->trace->n_outputs;
		if (n < DP_MAX_TRACE_OUT) {
			/* Re-bound n in the register the store uses: clang would
			 * otherwise fold the check away from the verifier's view. */
			asm volatile("%[n] &= 31" : [n] "+r"(n));
			st->trace->outputs[n].port = port;
			st->trace->outputs[n].vlan_tci = st->key.vlan_tci;
			st->trace->outputs[n].dl_src = st->key.dl_src;
			st->trace->outputs[n].dl_dst = st->key.dl_dst;
		}
		/* Counted past the last one recorded: a trace then says how many it left out. */
		st->trace->n_outputs = st->trace->n_outputs + 1;
	}
}
#endif

/* Send the pending output as a clone, so that another can follow.  NORMAL
 * re-enters the input port marked, so this program lets it through to the
 * bridge with the headers it has now; dp_normal set that up as an ingress
 * redirect with pend_mark.  Written with one branch: the verifier walks
 * this after every output of every action list. */
static __always_inline void dp_flush(struct __sk_buff *skb, struct dp_state *st)
{
#ifndef DP_TEST
	struct dp_out *o = st->out;

	if (o->pend_kind != DP_PEND_NONE) {
		skb->mark = st->mark | o->pend_mark;
		bpf_clone_redirect(skb, o->pend_ifindex,
				   (o->pend_flags / DP_PORT_INGRESS) & BPF_F_INGRESS);
		skb->mark = st->mark;
	}
#endif
	st->out->pend_kind = DP_PEND_NONE;
}

static __always_inline void dp_set_pending(struct __sk_buff *skb, struct dp_state *st,
					   __u32 port, __u32 ifindex, __u32 flags)
{
	struct dp_out *o;

	dp_flush(skb, st);
	o = st->out;
	o->to_home |= (flags / DP_PORT_HOME) & 1;
	o->off_dns |= ((flags / DP_PORT_DNS) & 1) ^ 1;
	o->pend_kind = DP_PEND_PORT;
	o->pend_port = port;
	o->pend_ifindex = ifindex;
	o->pend_flags = flags;
	o->pend_mark = 0;
#ifdef DP_TEST
	dp_trace_out(st, port);
#endif
}

/* output:PORT.  OpenFlow never sends a frame back out of its input port
 * unless asked with IN_PORT; ports without a device are skipped. */
static __always_inline void dp_output(struct __sk_buff *skb, struct dp_state *st,
				      __u32 port)
{
	struct dp_port *p;

	if (port == st->in_port)
		return;
	p = bpf_map_lookup_elem(&dp_ports, &port);
	if (!p || !p->ifindex)
		return;
	dp_set_pending(skb, st, port, p->ifindex, p->flags);
}

/* IN_PORT: the one way back out of the input port (which a resubmit may
 * have changed). */
static __always_inline void dp_output_in_port(struct __sk_buff *skb, struct dp_state *st)
{
	__u32 port = st->in_port;
	struct dp_port *p = bpf_map_lookup_elem(&dp_ports, &port);

	if (!p || !p->ifindex)
		return;
	dp_set_pending(skb, st, port, p->ifindex, p->flags);
}

static __always_inline void dp_normal(struct __sk_buff *skb, struct dp_state *st)
{
	dp_flush(skb, st);
	/* The bridge sends a frame for a home device's MAC to the home port
	 * it learned it on. */
	st->out->to_home = 1;
	st->out->off_dns = 1;
	st->out->pend_kind = DP_PEND_NORMAL;
	st->out->pend_ifindex = st->in_ifindex;
	st->out->pend_flags = DP_PORT_INGRESS;
	st->out->pend_mark = DP_MARK_NORMAL;
#ifdef DP_TEST
	dp_trace_out(st, DP_OFPP_NORMAL);
#endif
}

struct dp_flood_ctx {
	struct __sk_buff *skb;
	struct dp_state *st;
};

static long dp_flood_one(__u32 i, void *arg)
{
	struct dp_flood_ctx *c = arg;
	struct dp_flood_slot *f = bpf_map_lookup_elem(&dp_flood_ports, &i);

	if (!f || !f->ofport || !f->ifindex || f->ofport == c->st->in_port)
		return 0;
	dp_set_pending(c->skb, c->st, f->ofport, f->ifindex, f->flags);
	return 0;
}

/* FLOOD and ALL: every port but the input port, in dp_flood order. */
static __always_inline void dp_flood(struct __sk_buff *skb, struct dp_state *st)
{
	struct dp_flood_ctx c = { .skb = skb, .st = st };
	bpf_loop(DP_MAX_PORTS, dp_flood_one, &c, 0);
}

static __always_inline void dp_controller(struct __sk_buff *skb, struct dp_state *st,
					  __u32 table, __u32 slot)
{
#ifdef DP_TEST
	dp_trace_out(st, DP_OFPP_CONTROLLER);
#else
	struct dp_event *ev = bpf_ringbuf_reserve(&dp_events, sizeof(*ev), 0);
	__u32 len = skb->len;

	if (!ev) {
		dp_misc_add(DP_MISC_EVENT_DROPS);
		return;
	}
	ev->in_port = st->in_port;
	ev->slot = slot;
	ev->table = table;
	ev->len = len;
	if (len > DP_EVENT_BYTES)
		len = DP_EVENT_BYTES;
	/* 1..DP_EVENT_BYTES in a form the verifier follows (a frame here has
	 * at least an Ethernet header, so len >= 14 and this changes nothing):
	 * with two plain clamps clang hands the helper a register the verifier
	 * saw unchecked, and the program is rejected. */
	len = ((len - 1) & (DP_EVENT_BYTES - 1)) + 1;
	if (bpf_skb_load_bytes(skb, 0, ev->data, len) < 0)
		__builtin_memset(ev->data, 0, DP_EVENT_BYTES);
	bpf_ringbuf_submit(ev, 0);
#endif
}

/* `v`, read back from map memory, so the verifier no longer knows it.  A
 * rewrite sets a header in dp_state to the constant its flow names, and the
 * verifier kept each flow's constant as a state of its own for every table
 * after it: 20 mod_vlan_vid flows in each of five goto_table tables that
 * match on dl_vlan passed its 10^6 instructions.  Unknown values merge. */
static __always_inline __u64 dp_blind(struct dp_state *st, __u64 v)
{
	volatile __u32 *b = st->out->blind;

	b[0] = (__u32)v;
	b[1] = (__u32)(v >> 32);
	return ((__u64)b[1] << 32) | b[0];
}

static __always_inline void dp_store_mac(struct __sk_buff *skb, __u32 off, __u64 mac)
{
	__u8 b[6] = { mac >> 40, mac >> 32, mac >> 24, mac >> 16, mac >> 8, mac };
	bpf_skb_store_bytes(skb, off, b, 6, 0);
}

static __always_inline void dp_set_dl_dst(struct __sk_buff *skb, struct dp_state *st, __u64 mac)
{
	dp_flush(skb, st);
	st->key.dl_dst = dp_blind(st, mac);
	dp_store_mac(skb, 0, mac);
}

static __always_inline void dp_set_dl_src(struct __sk_buff *skb, struct dp_state *st, __u64 mac)
{
	dp_flush(skb, st);
	st->key.dl_src = dp_blind(st, mac);
	dp_store_mac(skb, 6, mac);
}

/* mod_vlan_vid: retag a tagged frame (keeping its PCP), tag an untagged one. */
static __always_inline void dp_set_vlan_vid(struct __sk_buff *skb, struct dp_state *st, __u16 vid)
{
	__u16 tci;

	dp_flush(skb, st);
	if (st->key.vlan_tci & DP_VLAN_PRESENT) {
		tci = (st->key.vlan_tci & 0xe000) | vid;
		bpf_skb_vlan_pop(skb);
	} else {
		tci = vid;
	}
	bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), tci);
	st->key.vlan_tci = dp_blind(st, tci | DP_VLAN_PRESENT);
}

/* set_field:N->vlan_pcp, mod_vlan_pcp: the PCP of the tag, tagging an
 * untagged frame with VID 0 (OVS's flow_set_vlan_pcp). */
static __always_inline void dp_set_vlan_pcp(struct __sk_buff *skb, struct dp_state *st, __u16 pcp)
{
	__u16 tci = (__u16)(pcp << 13);

	dp_flush(skb, st);
	if (st->key.vlan_tci & DP_VLAN_PRESENT) {
		tci |= st->key.vlan_tci & 0x0fff;
		bpf_skb_vlan_pop(skb);
	}
	bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), tci);
	st->key.vlan_tci = dp_blind(st, tci | DP_VLAN_PRESENT);
}

/* push_vlan:0x8100 on a frame the compiler knows is untagged: a tag with
 * VID 0 and PCP 0 (set_field on vlan_vid then gives it its VLAN). */
static __always_inline void dp_push_vlan(struct __sk_buff *skb, struct dp_state *st)
{
	dp_flush(skb, st);
	bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), 0);
	st->key.vlan_tci = dp_blind(st, DP_VLAN_PRESENT);
}

static __always_inline void dp_strip_vlan(struct __sk_buff *skb, struct dp_state *st)
{
	dp_flush(skb, st);
	if (st->key.vlan_tci & DP_VLAN_PRESENT) {
		bpf_skb_vlan_pop(skb);
		st->key.vlan_tci = dp_blind(st, 0);
	}
}

/* The headers a GSO/GRO skb repeats in each of its segments on the wire
 * (Ethernet, 802.1Q in the data, IP, TCP or UDP); 0 when it cannot tell. */
static __always_inline __u32 dp_gso_header_len(struct __sk_buff *skb)
{
	__u8 b[2];
	__u32 off = 14, l4;
	__u16 proto;
	__u8 l4proto;

	if (bpf_skb_load_bytes(skb, 12, b, 2) < 0)
		return 0;
	proto = ((__u16)b[0] << 8) | b[1];
	if (proto == ETH_P_8021Q) {
		if (bpf_skb_load_bytes(skb, 16, b, 2) < 0)
			return 0;
		proto = ((__u16)b[0] << 8) | b[1];
		off = 18;
	}
	if (proto == ETH_P_IP) {
		if (bpf_skb_load_bytes(skb, off, b, 2) < 0)
			return 0;
		l4 = off + (b[0] & 0x0f) * 4;
		if (bpf_skb_load_bytes(skb, off + 9, b, 1) < 0)
			return 0;
	} else if (proto == ETH_P_IPV6) {
		l4 = off + 40;
		if (bpf_skb_load_bytes(skb, off + 6, b, 1) < 0)
			return 0;
	} else {
		return 0;
	}
	l4proto = b[0];
	if (l4proto == IPPROTO_UDP)
		return l4 + 8;
	if (l4proto != IPPROTO_TCP)
		return 0;
	if (bpf_skb_load_bytes(skb, l4 + 12, b, 1) < 0)
		return 0;
	return l4 + (b[0] >> 4) * 4;
}

/* An skb may be many frames (GRO merged them on a NIC, or a veth passes a
 * GSO one on): count what the wire carries, every segment with its own
 * headers, as a NIC's own counters do; on a virtual home side
 * (DP_PORT_SKB_COUNT) count the skb, as the devices' veths do. */
static __always_inline void dp_wire_size(struct __sk_buff *skb, struct dp_state *st)
{
	__u32 segs = skb->gso_segs;

	st->wire_packets = 1;
	st->wire_bytes = skb->len;
	if (segs > 1 && segs <= 0xffff && !(st->in_flags & DP_PORT_SKB_COUNT)) {
		st->wire_packets = segs;
		st->wire_bytes = skb->len + (segs - 1) * dp_gso_header_len(skb);
	}
}

/* A group bit (multicast, broadcast) in the first octet: not one device. */
static __always_inline int dp_mac_unicast(__u64 mac)
{
	return mac && !((mac >> 40) & 1);
}

/* tx of a frame a device sent on a home port; makes its entry. */
static __always_inline void dp_mac_tx(struct dp_state *st)
{
	__u64 mac = st->key.dl_src;
	struct dp_mac_stats *m;

	if (!st->in_home || !dp_mac_unicast(mac))
		return;
	m = bpf_map_lookup_elem(&dp_macs, &mac);
	if (!m) {
		struct dp_mac_stats zero = {};
		bpf_map_update_elem(&dp_macs, &mac, &zero, BPF_NOEXIST);
		m = bpf_map_lookup_elem(&dp_macs, &mac);
		if (!m)
			return;
	}
	m->tx_packets += st->wire_packets;
	m->tx_bytes += st->wire_bytes;
	m->last_tx_ns = bpf_ktime_get_ns();
}

/* rx of a frame for a known device that leaves towards the home side. */
static __always_inline void dp_mac_rx(struct dp_state *st)
{
	__u64 mac = st->mac_dst;
	struct dp_mac_stats *m;

	if (st->in_home || !st->out->to_home || !dp_mac_unicast(mac))
		return;
	m = bpf_map_lookup_elem(&dp_macs, &mac);
	if (!m)
		return;
	m->rx_packets += st->wire_packets;
	m->rx_bytes += st->wire_bytes;
}

/* A paused device (dp_paused): its frames both ways are dropped here,
 * before the flows, except what keeps it on the network and lets it be
 * resumed (ARP, neighbour discovery, DHCP, DHCPv6) and DNS with the box,
 * which runs the flows and is dropped at the end unless they sent it only
 * to the box's DNS port.  Returns a verdict, or -1 to go on. */
static __always_inline int dp_pause_begin(struct dp_state *st)
{
	struct dp_key *k = &st->key;
	__u64 mac = st->in_home ? k->dl_src : st->mac_dst;
	int l4 = k->nw_proto == IPPROTO_UDP || k->nw_proto == IPPROTO_TCP;

	if (!dp_mac_unicast(mac) || !bpf_map_lookup_elem(&dp_paused, &mac))
		return -1;
	if (k->dl_type == ETH_P_ARP)
		return -1;
	if (k->dl_type == ETH_P_IPV6 && k->nw_proto == 58 &&
	    k->icmp_type >= 133 && k->icmp_type <= 137)
		return -1;
	if (st->in_home) {
		if (k->nw_proto == IPPROTO_UDP && (k->tp_dst == 67 || k->tp_dst == 547))
			return -1;
		if (l4 && k->tp_dst == 53) {
			st->pause_dns = 1;
			return -1;
		}
	} else {
		if (k->nw_proto == IPPROTO_UDP && (k->tp_src == 67 || k->tp_src == 547))
			return -1;
		if (l4 && k->tp_src == 53 && (st->in_flags & DP_PORT_DNS))
			return -1;
	}
	dp_misc_add(DP_MISC_PAUSE_DROPS);
#ifdef DP_TEST
	if (st->trace)
		st->trace->verdict = TC_ACT_SHOT;
#endif
	return TC_ACT_SHOT;
}

static __always_inline int dp_finish(struct __sk_buff *skb, struct dp_state *st)
{
	int verdict = TC_ACT_SHOT;

	if (st->out->pend_kind == DP_PEND_PORT)
		verdict = TC_ACT_REDIRECT;
	else if (st->out->pend_kind == DP_PEND_NORMAL)
		verdict = TC_ACT_OK;
	if (st->pause_dns && st->out->off_dns) {
		/* A paused device's DNS the flows did not send to the box. */
		dp_misc_add(DP_MISC_PAUSE_DROPS);
		verdict = TC_ACT_SHOT;
	}
	if (verdict != TC_ACT_SHOT)
		dp_mac_rx(st);
#ifdef DP_TEST
	if (st->trace)
		st->trace->verdict = verdict;
	return verdict;
#else
	if (verdict != TC_ACT_REDIRECT)
		return verdict;
	skb->mark = st->mark;
	if (st->out->pend_flags & DP_PORT_PEER)
		return bpf_redirect_peer(st->out->pend_ifindex, 0);
	if (st->out->pend_flags & DP_PORT_INGRESS)
		return bpf_redirect(st->out->pend_ifindex, BPF_F_INGRESS);
	return bpf_redirect(st->out->pend_ifindex, 0);
#endif
}

#if DP_N_REGS > DP_HEALTH_REG
/* The health register: one bit per service whose heartbeat is fresh. */
static __always_inline __u32 dp_health_bits(void)
{
	__u32 zero = 0, bits = 0;
	struct dp_health *h = bpf_map_lookup_elem(&dp_health, &zero);
	__u64 now;
	int i;

	if (!h)
		return 0;
	now = bpf_ktime_get_ns();
	/* Without a branch: (now - until) wraps to a value with the top bit
	 * set exactly when now < until (both are far below 2^63).  With a
	 * branch per bit the verifier would walk every one of the 256 values
	 * through the flow table. */
#pragma unroll
	for (i = 0; i < DP_HEALTH_SERVICES; i++)
		bits |= (__u32)((now - h->fresh_until[i]) >> 63) << i;
	return bits;
}
#endif

/* Set up the state for one frame; returns a verdict (>= 0) to return at
 * once, or -1 to run the flow tables. */
static __always_inline int dp_begin(struct __sk_buff *skb, struct dp_state *st)
{
	__u32 mark = skb->mark;
	__u32 hops;
	int ret;

	if (mark & DP_MARK_NORMAL) {
		skb->mark = mark & ~DP_MARK_NORMAL;
		return TC_ACT_OK;
	}
	hops = (mark & DP_MARK_HOPS) >> DP_MARK_HOPS_SHIFT;
	if (hops >= DP_MAX_HOPS) {
		dp_misc_add(DP_MISC_LOOP_DROPS);
		return TC_ACT_SHOT;
	}
	st->mark = (mark & ~DP_MARK_HOPS) | ((hops + 1) << DP_MARK_HOPS_SHIFT);
	st->in_ifindex = skb->ifindex;
	{
		__u32 zero = 0;
		st->out = bpf_map_lookup_elem(&dp_outs, &zero);
		if (!st->out)
			return TC_ACT_SHOT;   /* index 0 of a per-CPU array: not reached */
		__builtin_memset(st->out, 0, sizeof(struct dp_out));
	}
#ifdef DP_TEST
	{
		__u32 zero = 0;
		st->trace = bpf_map_lookup_elem(&dp_trace, &zero);
		if (st->trace)
			__builtin_memset(st->trace, 0, sizeof(struct dp_trace));
		st->key.in_port = skb->cb[0];
		st->in_port = skb->cb[0];
#if DP_N_REGS > DP_HEALTH_REG
		/* The test build takes the health register as input, as the
		 * reference classifier and ofproto/trace do. */
		st->regs[DP_HEALTH_REG] = skb->cb[1];
#endif
	}
#else
	{
		__u32 ifindex = skb->ifindex;
		__u32 *port = bpf_map_lookup_elem(&dp_ifports, &ifindex);
		if (!port)
			return TC_ACT_OK;   /* not one of ours: leave it to the bridge */
		st->key.in_port = *port;
		st->in_port = *port;
	}
#if DP_N_REGS > DP_HEALTH_REG
	st->regs[DP_HEALTH_REG] = dp_health_bits();
#endif
#endif
	{
		__u32 port = st->in_port;
		struct dp_port *p = bpf_map_lookup_elem(&dp_ports, &port);
		st->in_flags = p ? p->flags : 0;
		st->in_home = (st->in_flags & DP_PORT_HOME) != 0;
	}
	ret = dp_parse(skb, &st->key);
	if (ret < 0)
		return TC_ACT_SHOT;
	st->mac_dst = st->key.dl_dst;
	if (st->in_home || dp_mac_unicast(st->mac_dst))
		dp_wire_size(skb, st);
	dp_mac_tx(st);
	return dp_pause_begin(st);
}

#endif
