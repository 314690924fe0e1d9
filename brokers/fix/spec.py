"""The part of the FIX 4.4 data dictionary this package speaks: tags, required fields, value sets."""
from __future__ import annotations


class Tag:
    """FIX 4.4 tag numbers used by the session and application layers."""

    AvgPx = 6
    BeginSeqNo = 7
    BeginString = 8
    BodyLength = 9
    CheckSum = 10
    ClOrdID = 11
    Commission = 12
    CommType = 13
    CumQty = 14
    EndSeqNo = 16
    ExecID = 17
    HandlInst = 21
    LastPx = 31
    LastQty = 32
    MsgSeqNum = 34
    MsgType = 35
    NewSeqNo = 36
    OrderID = 37
    OrderQty = 38
    OrdStatus = 39
    OrdType = 40
    OrigClOrdID = 41
    PossDupFlag = 43
    Price = 44
    RefSeqNum = 45
    SenderCompID = 49
    SendingTime = 52
    Side = 54
    Symbol = 55
    TargetCompID = 56
    Text = 58
    TimeInForce = 59
    TransactTime = 60
    EncryptMethod = 98
    StopPx = 99
    CxlRejReason = 102
    OrdRejReason = 103
    HeartBtInt = 108
    TestReqID = 112
    OrigSendingTime = 122
    GapFillFlag = 123
    ResetSeqNumFlag = 141
    ExecType = 150
    LeavesQty = 151
    RefTagID = 371
    RefMsgType = 372
    SessionRejectReason = 373
    BusinessRejectRefID = 379
    BusinessRejectReason = 380
    CxlRejResponseTo = 434
    Username = 553
    Password = 554
    NewPassword = 925


class MsgType:
    """FIX 4.4 MsgType (35) values used here."""

    Heartbeat = "0"
    TestRequest = "1"
    ResendRequest = "2"
    Reject = "3"
    SequenceReset = "4"
    Logout = "5"
    ExecutionReport = "8"
    OrderCancelReject = "9"
    Logon = "A"
    NewOrderSingle = "D"
    OrderCancelRequest = "F"
    OrderCancelReplaceRequest = "G"
    OrderStatusRequest = "H"
    BusinessMessageReject = "j"


class RejectReason:
    """SessionRejectReason (373) codes."""

    INVALID_TAG_NUMBER = 0
    REQUIRED_TAG_MISSING = 1
    TAG_NOT_DEFINED_FOR_MSG_TYPE = 2
    UNDEFINED_TAG = 3
    TAG_WITHOUT_VALUE = 4
    VALUE_OUT_OF_RANGE = 5
    INCORRECT_DATA_FORMAT = 6
    COMPID_PROBLEM = 9
    SENDING_TIME_ACCURACY = 10
    INVALID_MSG_TYPE = 11
    TAG_APPEARS_MORE_THAN_ONCE = 13
    TAG_OUT_OF_ORDER = 14
    OTHER = 99


ADMIN_TYPES = frozenset("012345A")

# Every MsgType defined by FIX 4.4: a type outside this set gets Reject(373=11); a defined type
# the application does not handle gets BusinessMessageReject(380=3, unsupported message type).
FIX44_MSG_TYPES = frozenset(
    list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    + ["A" + c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"] + ["B" + c for c in "ABCDEFGH"]
)

# Header fields (FIX 4.4 StandardHeader): they must all come before the first body field.
HEADER_TAGS = frozenset({8, 9, 35, 49, 56, 115, 128, 90, 91, 34, 50, 142, 57, 143, 116, 144, 129, 145,
                         43, 97, 52, 122, 212, 213, 347, 369, 627, 628, 629, 630})
HEADER_REQUIRED = (Tag.SenderCompID, Tag.TargetCompID, Tag.MsgSeqNum, Tag.SendingTime)

# Required body fields per message type, in the order they are checked (FIX 4.4 dictionary;
# Symbol from the Instrument block and OrderQty from OrderQtyData, which these messages require).
REQUIRED: dict[str, tuple[int, ...]] = {
    MsgType.Heartbeat: (),
    MsgType.TestRequest: (Tag.TestReqID,),
    MsgType.ResendRequest: (Tag.BeginSeqNo, Tag.EndSeqNo),
    MsgType.Reject: (Tag.RefSeqNum,),
    MsgType.SequenceReset: (Tag.NewSeqNo,),
    MsgType.Logout: (),
    MsgType.Logon: (Tag.EncryptMethod, Tag.HeartBtInt),
    MsgType.NewOrderSingle: (Tag.ClOrdID, Tag.Symbol, Tag.Side, Tag.TransactTime, Tag.OrderQty, Tag.OrdType),
    MsgType.OrderCancelRequest: (Tag.OrigClOrdID, Tag.ClOrdID, Tag.Symbol, Tag.Side, Tag.TransactTime),
    MsgType.OrderCancelReplaceRequest: (Tag.OrigClOrdID, Tag.ClOrdID, Tag.Symbol, Tag.Side, Tag.TransactTime,
                                        Tag.OrderQty, Tag.OrdType),
    MsgType.OrderStatusRequest: (Tag.ClOrdID, Tag.Symbol, Tag.Side),
    MsgType.ExecutionReport: (Tag.OrderID, Tag.ExecID, Tag.ExecType, Tag.OrdStatus, Tag.Symbol, Tag.Side,
                              Tag.LeavesQty, Tag.CumQty, Tag.AvgPx),
    MsgType.OrderCancelReject: (Tag.OrderID, Tag.ClOrdID, Tag.OrigClOrdID, Tag.OrdStatus, Tag.CxlRejResponseTo),
    MsgType.BusinessMessageReject: (Tag.RefMsgType, Tag.BusinessRejectReason),
}

INT_TAGS = frozenset({Tag.BeginSeqNo, Tag.EndSeqNo, Tag.MsgSeqNum, Tag.NewSeqNo, Tag.RefSeqNum, Tag.EncryptMethod,
                      Tag.HeartBtInt, Tag.RefTagID, Tag.SessionRejectReason, Tag.CxlRejReason, Tag.OrdRejReason,
                      Tag.BusinessRejectReason, Tag.BodyLength})
FLOAT_TAGS = frozenset({Tag.AvgPx, Tag.Commission, Tag.CumQty, Tag.LastPx, Tag.LastQty, Tag.OrderQty, Tag.Price,
                        Tag.StopPx, Tag.LeavesQty})
TIME_TAGS = frozenset({Tag.SendingTime, Tag.OrigSendingTime, Tag.TransactTime})

# Value sets of enumerated fields as FIX 4.4 defines them (all defined values, not only those
# this engine trades: an undefined value is a session-level Reject(373=5), a defined but
# unsupported one an application-level rejection).
ENUMS: dict[int, frozenset[str]] = {
    Tag.PossDupFlag: frozenset("YN"),
    Tag.GapFillFlag: frozenset("YN"),
    Tag.ResetSeqNumFlag: frozenset("YN"),
    Tag.Side: frozenset("123456789ABCDEFG"),
    Tag.OrdType: frozenset("123456789ABCDEFGHIJKLMP"),
    Tag.TimeInForce: frozenset("01234567"),
    Tag.ExecType: frozenset("03456789ABCDEFGHI"),
    Tag.OrdStatus: frozenset("0123456789ABCDE"),
    Tag.HandlInst: frozenset("123"),
    Tag.CommType: frozenset("123456"),
    Tag.CxlRejResponseTo: frozenset("12"),
    Tag.EncryptMethod: frozenset("0123456"),
}

# Fields whose values never reach a log: Password, NewPassword, RawData (may carry credentials).
SECRET_TAGS = frozenset({Tag.Password, Tag.NewPassword, 96})
