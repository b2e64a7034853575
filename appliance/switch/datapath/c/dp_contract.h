/* The one contract between the compiled datapath and its userspace.
 *
 * Every struct that crosses the boundary (map keys and values, ring buffer
 * events, the test build's trace record) is declared here and nowhere else;
 * appliance/switch/datapath/contract.py mirrors it with struct formats and
 * a unit test compares the two.  All fields are host byte order.
 */
#ifndef DP_CONTRACT_H
#define DP_CONTRACT_H

#include <linux/types.h>

/* OpenFlow reserved port numbers, as OVS uses them. */
#define DP_OFPP_IN_PORT    0xfff8
#define DP_OFPP_NORMAL     0xfffa
#define DP_OFPP_FLOOD      0xfffb
#define DP_OFPP_ALL        0xfffc
#define DP_OFPP_CONTROLLER 0xfffd
#define DP_OFPP_LOCAL      0xfffe

#define DP_MAX_PORTS       64      /* ports a FLOOD/ALL walks over */
#define DP_MAX_TRACE_MATCH 16      /* tables visited, test build only */
#define DP_MAX_TRACE_OUT   32      /* outputs recorded, test build only */
#define DP_EVENT_BYTES     128     /* packet bytes copied to the controller (a power of 2) */

/* skb->mark bits the datapath owns.  The hop count stops redirect loops
 * (the kernel does not); DP_MARK_NORMAL tags a clone re-injected at the
 * input port so that the Linux bridge, not the flows, handles it. */
#define DP_MARK_HOPS_SHIFT 24
#define DP_MARK_HOPS       0x0f000000u
#define DP_MARK_NORMAL     0x10000000u
#define DP_MAX_HOPS        8

#define DP_VLAN_PRESENT    0x1000  /* OVS's CFI trick: vlan_tci != 0 iff tagged */

/* The header fields flows match on, one slot per canonical field of
 * appliance/switch/fields.py (a header the frame lacks reads 0).  MACs
 * are 48-bit numbers, first octet most significant; IPv6 addresses are
 * two such words, [0] the high half.  ipv6_label is the low 20 bits of the
 * IPv6 header's first word; nd_* are read from a neighbour solicitation
 * or advertisement with code 0 only. */
struct dp_key {
	__u64 dl_dst;
	__u64 dl_src;
	__u64 arp_sha;
	__u64 arp_tha;
	__u64 nd_sll;
	__u64 nd_tll;
	__u64 ipv6_src[2];
	__u64 ipv6_dst[2];
	__u64 nd_target[2];
	__u32 nw_src;
	__u32 nw_dst;
	__u32 arp_spa;
	__u32 arp_tpa;
	__u32 ipv6_label;
	__u16 in_port;
	__u16 vlan_tci;
	__u16 dl_type;
	__u16 arp_op;
	__u16 tp_src;
	__u16 tp_dst;
	__u8  nw_proto;
	__u8  nw_tos;
	__u8  nw_ttl;
	__u8  icmp_type;
	__u8  icmp_code;
	__u8  pad[3];
};

/* Port number -> device.  DP_PORT_PEER: a veth whose peer sits in another
 * namespace, so a redirect may go straight to the peer's ingress.
 * DP_PORT_INGRESS: deliver to the device's own stack (LOCAL).
 * DP_PORT_HOME: the port faces the home's devices; their traffic is
 * counted per MAC in dp_macs.  DP_PORT_DNS: the box's DNS server is
 * behind it (what a paused device may still reach).  DP_PORT_SKB_COUNT
 * (on every port when the home port is a veth, as in the lab): count a
 * GSO skb as one packet, as a veth's own counters do, instead of as the
 * segments a wire carries. */
#define DP_PORT_PEER    1
#define DP_PORT_INGRESS 2   /* LOCAL: into the device's own stack */
#define DP_PORT_HOME    4
#define DP_PORT_DNS     8
#define DP_PORT_SKB_COUNT 16
struct dp_port {
	__u32 ifindex;
	__u32 flags;
};

/* One entry per port in dp_flood_ports (index is arbitrary, ofport 0 = empty). */
struct dp_flood_slot {
	__u32 ofport;
	__u32 ifindex;
	__u32 flags;
	__u32 pad;
};

/* Tuple space: one hash map per table.  Its key (generated per table) is
 * the mask's id followed by the fields under that mask, packed largest
 * first; the value says which flow it is. */
struct dp_tuple_val {
	__u32 rank;       /* position in (priority desc, insertion) order */
	__u32 slot;       /* counter slot */
	__u32 action;     /* index of the action list in the table's switch */
	__u32 pad;
};

struct dp_stats {
	__u64 packets;
	__u64 bytes;
};

/* Per home device, by MAC (48-bit number as in dp_key), one value per CPU.
 * tx: frames the device sent, counted as they enter a home port (dropped
 * or not); rx: unicast frames to it that entered another port and left
 * towards a home port (an output to it, or NORMAL).  Lengths are
 * skb->len at tc ingress: the Ethernet frame without FCS, as the device's
 * own interface counters count it.  An entry is made only by a frame a
 * device sends on a home port; the LRU map evicts the longest silent one. */
#define DP_MAX_MACS        4096
struct dp_mac_stats {
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 last_tx_ns;        /* CLOCK_MONOTONIC of the last frame it sent */
};

/* Paused home devices, by MAC: their frames are dropped both ways except
 * ARP, neighbour discovery (ICMPv6 133-137), DHCP and DHCPv6, and DNS
 * that the flows send to a DP_PORT_DNS port (the box's DNS server) and its
 * answers from there.  The value is unused (0). */
#define DP_MAX_PAUSED      1024

/* The box's health register (OpenFlow reg15), loaded at pipeline entry
 * from dp_health: bit i is set while service i's heartbeat is fresh, i.e.
 * bpf_ktime_get_ns() (CLOCK_MONOTONIC) < fresh_until[i].  The watchdog
 * writes fresh_until = now + a few seconds after each good probe and 0 when
 * the service fails; with no writer at all every bit clears by itself, and
 * flows that match the bits (DNS steering, the DHCP guards) step aside. */
#define DP_HEALTH_REG      15
#define DP_HEALTH_SERVICES 8
struct dp_health {
	__u64 fresh_until[DP_HEALTH_SERVICES];   /* CLOCK_MONOTONIC ns */
};

/* Global counters in dp_misc (index = enum). */
enum dp_misc_counter {
	DP_MISC_PACKETS = 0,      /* frames the program ran on */
	DP_MISC_LOOP_DROPS = 1,   /* frames dropped by the hop guard */
	DP_MISC_EVENT_DROPS = 2,  /* controller events lost (ring full) */
	DP_MISC_PAUSE_DROPS = 3,  /* frames of paused devices dropped */
	DP_MISC_MAX = 4,
};

/* A controller action: the flow's slot and the first bytes of the frame. */
struct dp_event {
	__u32 in_port;
	__u32 slot;
	__u32 table;
	__u32 len;               /* frame length; data holds min(len, DP_EVENT_BYTES) */
	__u8  data[DP_EVENT_BYTES];
};

/* Test build only: what the program did to one frame. */
struct dp_trace_match {
	__u32 table;
	__u32 slot;
};

struct dp_trace_out {
	__u32 port;              /* OpenFlow port, DP_OFPP_NORMAL, or DP_OFPP_CONTROLLER */
	__u16 vlan_tci;
	__u16 pad;
	__u64 dl_src;
	__u64 dl_dst;
};

struct dp_trace {
	__u32 n_matches;
	__u32 n_outputs;         /* all of them; the first DP_MAX_TRACE_OUT are recorded */
	__u32 verdict;           /* the TC_ACT_* the production build would return */
	__u32 pad;
	struct dp_trace_match matches[DP_MAX_TRACE_MATCH];
	struct dp_trace_out outputs[DP_MAX_TRACE_OUT];
};

#endif
