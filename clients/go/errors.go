package virtualdom

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/virtualdom/virtualdom/clients/go/gen/virtualdom/v1"
)

// Error is a failed call: the gRPC code and message, and the gateway's ErrorDetail when it sent
// one (its Reason, e.g. "VERSION_MISMATCH", "HISTORY_COMPACTED", "LIMIT_EXCEEDED", says what a
// caller can act on). Use errors.As to get it from any error this package returns.
type Error struct {
	Code    codes.Code
	Message string
	// Reason is Detail.Reason, or "" when the gateway attached no detail.
	Reason string
	// Detail is the ErrorDetail from grpc-status-details-bin (nil when absent).
	Detail *pb.ErrorDetail
	status *status.Status
}

func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("virtualdom: %s (%s): %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("virtualdom: %s: %s", e.Code, e.Message)
}

// GRPCStatus lets status.FromError and status.Code see the original status.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// fromRPC converts a gRPC error into *Error (other errors, e.g. a cancelled context's, are
// returned as they are).
func fromRPC(err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	out := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, d := range st.Details() {
		if detail, ok := d.(*pb.ErrorDetail); ok {
			out.Detail = detail
			out.Reason = detail.GetReason()
		}
	}
	return out
}

// CodeOf is the gRPC code of an error this package returned (codes.Unknown for other errors,
// codes.OK for nil).
func CodeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return status.Code(err)
}

// ReasonOf is the ErrorDetail reason of an error this package returned ("" if none).
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func asError(err error, target **Error) bool { return errors.As(err, target) }
